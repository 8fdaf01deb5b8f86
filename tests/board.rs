//! The board end to end in headless Chromium: tests/js/board.mjs drives Debian's chromium
//! (playwright-core) against a real `viber all-in-one`. `./scripts/test.sh` installs chromium
//! and the npm packages when they are missing; screenshots go to target/board-artifacts.

use std::path::Path;
use std::process::Command;

#[test]
fn board_end_to_end_in_chromium() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    assert!(
        root.join("assets/dist/index.html").exists(),
        "the board is not built (assets/dist): the build needs npm; see README"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        Path::new(&chromium).exists(),
        "{chromium} is missing: run ./scripts/test.sh, which installs Debian's chromium"
    );
    assert!(
        root.join("tests/js/node_modules/playwright-core").exists(),
        "playwright-core is missing: run ./scripts/test.sh (npm ci in tests/js)"
    );
    let status = Command::new("node")
        .arg("tests/js/board.mjs")
        .current_dir(root)
        .env("VIBER_BIN", env!("CARGO_BIN_EXE_viber"))
        // As in common::Proc::spawn: the operator's free-disk floor is not under test here.
        .env("VIBER_MIN_FREE_DISK_MB", "1")
        .env("CHROMIUM", &chromium)
        .env("ARTIFACTS", root.join("target/board-artifacts"))
        .status()
        .expect("running node");
    assert!(status.success(), "the board test failed (output above)");
}
