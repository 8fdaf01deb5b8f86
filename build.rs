//! Builds the board (`assets/`, TypeScript + Preact, bundled by Vite) into `assets/dist`, which
//! the gateway embeds with rust-embed. Runs only when the board's sources change.
//!
//! - Without npm (or with `VIBER_SKIP_BOARD=1`) the binary is built without the board and the
//!   gateway serves a placeholder page that says how to build it.
//! - npm packages come from `assets/package-lock.json` (`npm ci`); an install that fails (no
//!   registry access) also falls back to the placeholder, with a warning.
//! - A board that does not type-check or bundle fails the build: that is a bug in our code.

use std::path::Path;
use std::process::Command;

const INPUTS: &[&str] = &[
    "assets/src",
    "assets/index.html",
    "assets/package.json",
    "assets/package-lock.json",
    "assets/tsconfig.json",
    "assets/vite.config.ts",
];

fn main() {
    for input in INPUTS {
        println!("cargo:rerun-if-changed={input}");
    }
    println!("cargo:rerun-if-env-changed=VIBER_SKIP_BOARD");
    if std::env::var_os("VIBER_SKIP_BOARD").is_some_and(|v| v != "0") {
        return;
    }
    let assets = Path::new(env!("CARGO_MANIFEST_DIR")).join("assets");
    let npm = if cfg!(windows) { "npm.cmd" } else { "npm" };
    if Command::new(npm).arg("--version").output().is_err() {
        println!(
            "cargo:warning=npm not found: building without the board (the gateway serves a \
             placeholder page). Install Node.js/npm and rebuild to embed it."
        );
        return;
    }

    let installed = assets.join("node_modules/.package-lock.json");
    let stale = match (
        std::fs::metadata(&installed).and_then(|m| m.modified()),
        std::fs::metadata(assets.join("package-lock.json")).and_then(|m| m.modified()),
    ) {
        (Ok(have), Ok(want)) => want > have,
        _ => true,
    };
    if stale {
        let out = Command::new(npm)
            .args(["ci", "--no-audit", "--no-fund", "--loglevel=error"])
            .current_dir(&assets)
            .output();
        match out {
            Ok(o) if o.status.success() => {}
            Ok(o) => {
                println!(
                    "cargo:warning=`npm ci` in assets/ failed; building without the board: {}",
                    String::from_utf8_lossy(&o.stderr)
                        .lines()
                        .last()
                        .unwrap_or("")
                );
                return;
            }
            Err(e) => {
                println!("cargo:warning=running npm failed ({e}); building without the board");
                return;
            }
        }
    }

    let out = Command::new(npm)
        .args(["run", "build", "--silent"])
        .current_dir(&assets)
        .output()
        .expect("running npm run build");
    if !out.status.success() {
        panic!(
            "building the board (npm run build in assets/) failed:\n{}\n{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}
