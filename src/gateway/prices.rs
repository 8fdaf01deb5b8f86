//! The price table: what a model's tokens cost, from the operator's `prices.json`, for the
//! usage of agents that report no cost themselves (the built-in agent, Codex). No price is
//! built in: a model missing from the table stays unpriced, and the usage report says how
//! many tokens that left out.
//!
//! ```json
//! { "models": { "gpt-4o-mini": { "inputPerMillion": 0.15, "outputPerMillion": 0.60 } } }
//! ```

use std::collections::BTreeMap;
use std::path::Path;

use anyhow::Context;
use serde::Deserialize;

/// US dollars per million tokens of one model.
#[derive(Debug, Clone, Copy, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct Price {
    pub input_per_million: f64,
    pub output_per_million: f64,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prices {
    models: BTreeMap<String, Price>,
}

impl Prices {
    /// Reads `path`; a missing file is an empty table, a malformed one an error that says
    /// what is wrong.
    pub fn load(path: &Path) -> anyhow::Result<Prices> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Prices::default()),
            Err(e) => return Err(e).with_context(|| format!("reading {}", path.display())),
        };
        let prices: Prices = serde_json::from_str(&text).with_context(|| {
            format!(
                "{}: expected {{\"models\": {{\"MODEL\": {{\"inputPerMillion\": USD, \"outputPerMillion\": USD}}}}}}",
                path.display()
            )
        })?;
        for (model, p) in &prices.models {
            let ok = |v: f64| v.is_finite() && v >= 0.0;
            anyhow::ensure!(
                ok(p.input_per_million) && ok(p.output_per_million),
                "{}: the prices of {model:?} must be finite and not negative",
                path.display()
            );
        }
        Ok(prices)
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }

    /// What `input` and `output` tokens of `model` cost, if the table prices it.
    pub fn cost(&self, model: Option<&str>, input: i64, output: i64) -> Option<f64> {
        let p = self.models.get(model?)?;
        Some(
            (input.max(0) as f64 * p.input_per_million
                + output.max(0) as f64 * p.output_per_million)
                / 1_000_000.0,
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_table_prices_its_models_and_refuses_nonsense() {
        let dir = std::env::temp_dir().join(format!("viber-prices-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("prices.json");
        assert!(Prices::load(&f).unwrap().is_empty());
        std::fs::write(
            &f,
            r#"{"models": {"m": {"inputPerMillion": 2, "outputPerMillion": 10}}}"#,
        )
        .unwrap();
        let p = Prices::load(&f).unwrap();
        assert_eq!(p.cost(Some("m"), 500_000, 100_000), Some(2.0));
        assert_eq!(p.cost(Some("other"), 1, 1), None);
        assert_eq!(p.cost(None, 1, 1), None);
        for bad in [
            r#"{"models": {"m": {"inputPerMillion": -1, "outputPerMillion": 1}}}"#,
            r#"{"models": {"m": {"inputPerMillion": 1}}}"#,
            r#"{"m": 1}"#,
            "not json",
        ] {
            std::fs::write(&f, bad).unwrap();
            assert!(Prices::load(&f).is_err(), "{bad}");
        }
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
