//! The anomaly model is reproducible: retraining with the committed script (fixed seeds) gives
//! the committed `.onnx`, byte for byte.

use std::path::Path;
use std::process::Command;

#[test]
fn retraining_reproduces_the_committed_model() {
    let repo = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let python = repo.join(".tools/venv/bin/python");
    assert!(
        python.exists(),
        "{} is missing: run ./setup.sh (it installs the training requirements)",
        python.display()
    );
    let out = std::env::temp_dir().join(format!("eddy-retrained-{}.onnx", std::process::id()));
    let run = Command::new(&python)
        .arg(repo.join("udfs/anomaly/train/train.py"))
        // The training data comes from this very binary's generator.
        .env("EDDY_BIN", env!("CARGO_BIN_EXE_eddy"))
        .env("EDDY_MODEL_OUT", &out)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&run.stdout);
    assert!(
        run.status.success(),
        "train.py failed:\n{stdout}\n{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let retrained = std::fs::read(&out).unwrap();
    let committed = std::fs::read(repo.join("udfs/anomaly/model/autoencoder.onnx")).unwrap();
    std::fs::remove_file(&out).ok();
    assert!(
        retrained == committed,
        "retraining gave a different model ({} bytes vs {} committed); training output:\n{stdout}",
        retrained.len(),
        committed.len()
    );
    // The threshold the model carries is the documented quantile of held-out normal scores.
    assert!(stdout.contains("held-out FPR at threshold"), "{stdout}");
}
