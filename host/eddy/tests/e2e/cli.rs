//! The `eddy` binary as a user runs it.

use std::process::Command;

fn eddy() -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_eddy"));
    // Paths in queries/ are relative to the repository root, where the README runs them.
    cmd.current_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/../.."));
    cmd.env(
        "EDDY_CACHE_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/eddy-test-cache"),
    );
    cmd.env(
        "EDDY_STATE_DIR",
        concat!(env!("CARGO_MANIFEST_DIR"), "/../../target/eddy-test-state"),
    );
    cmd
}

#[test]
fn run_hello_builds_the_udf_and_prints_rows_computed_in_wasm() {
    let out = eddy().args(["run", "queries/hello.sql"]).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let expected = "\
+----------+---------------------+-----------+-----------+
| CAR      | TIMESTAMP           | COOLANT_C | COOLANT_F |
+----------+---------------------+-----------+-----------+
| car-0001 | 2026-01-01T00:00:00 | 91.3      | 196.3     |
| car-0002 | 2026-01-01T00:00:00 | 86.1      | 187.0     |
| car-0003 | 2026-01-01T00:00:00 | 89.0      | 192.2     |
| car-0004 | 2026-01-01T00:00:00 | 89.4      | 193.0     |
| car-0001 | 2026-01-01T00:00:01 | 92.0      | 197.5     |
| car-0002 | 2026-01-01T00:00:01 | 86.5      | 187.6     |
| car-0003 | 2026-01-01T00:00:01 | 89.5      | 193.1     |
| car-0004 | 2026-01-01T00:00:01 | 89.1      | 192.4     |
+----------+---------------------+-----------+-----------+
(8 rows)";
    assert!(stdout.contains(expected), "stdout:\n{stdout}");
    assert!(
        stdout.contains("| signature     | celsius_to_fahrenheit(c DOUBLE) -> DOUBLE"),
        "{stdout}"
    );
    assert!(
        stdout.contains("| max_log_lines | 100 "),
        "the default limits: {stdout}"
    );
}

#[test]
fn a_failing_statement_stops_the_script_with_its_line() {
    let dir = std::env::temp_dir().join(format!("eddy-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("bad.sql");
    std::fs::write(&script, "SELECT 1 AS one;\n\nSELECT nope(1);\nSELECT 2;\n").unwrap();
    let out = eddy().arg("run").arg(&script).output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stdout.contains("| ONE |"), "{stdout}");
    assert!(
        !stdout.contains("SELECT 2"),
        "stopped before the last statement: {stdout}"
    );
    assert!(
        stderr.contains(&format!("error: {}:3: ", script.display()))
            && stderr.contains("Invalid function 'nope'"),
        "{stderr}"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn udf_build_without_a_crate_says_so() {
    let out = eddy().args(["udf", "build", "queries"]).output().unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("queries is not a UDF: no Cargo.toml, udf.py or udf.js there"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn udf_build_without_the_wasm_toolchain_points_at_setup() {
    let out = eddy()
        .args(["udf", "build", "udfs/temperature"])
        .env("EDDY_GUEST_RUSTC", "/nonexistent/rustc")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains(
            "the wasm toolchain is incomplete: Debian's rustc (package rustc-web) not found at \
             /nonexistent/rustc — run the setup command in README.md (./setup.sh)"
        ),
        "{stderr}"
    );
}

#[test]
fn udf_build_without_the_python_or_js_toolchain_points_at_setup() {
    for (dir, var, expected) in [
        (
            "udfs/temperature_py",
            "EDDY_COMPONENTIZE_PY",
            "the wasm toolchain is incomplete: componentize-py (Python UDFs) not found at \
             /nonexistent/componentize-py; ./setup.sh installs it into .tools/venv — run the setup \
             command in README.md (./setup.sh)",
        ),
        (
            "udfs/temperature_js",
            "EDDY_COMPONENTIZE_JS",
            "the wasm toolchain is incomplete: ComponentizeJS (JavaScript UDFs) not found at \
             /nonexistent/componentize-js; ./setup.sh installs it with npm ci in sdk/js — run the \
             setup command in README.md (./setup.sh)",
        ),
    ] {
        // A fresh output file, so the up-to-date check cannot skip the build.
        let out_file =
            std::env::temp_dir().join(format!("eddy-cli-{var}-{}.wasm", std::process::id()));
        let out = eddy()
            .args(["udf", "build", dir, "--out"])
            .arg(&out_file)
            .env(
                var,
                if var.ends_with("PY") {
                    "/nonexistent/componentize-py"
                } else {
                    "/nonexistent/componentize-js"
                },
            )
            .output()
            .unwrap();
        assert!(!out.status.success());
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(expected), "{stderr}");
    }
}

#[test]
fn udf_new_scaffolds_a_python_udf_outside_the_repository_that_builds_and_loads() {
    let dir = std::env::temp_dir().join(format!("eddy-cli-new-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let out = eddy()
        .current_dir(&dir)
        .args(["udf", "new", "to_f", "--lang", "python"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut files: Vec<String> = std::fs::read_dir(dir.join("to_f"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    files.sort();
    assert_eq!(files, ["README.md", "pyproject.toml", "udf.py"]);
    let script = dir.join("load.sql");
    std::fs::write(
        &script,
        "CREATE FUNCTION to_f FROM 'to_f';\nSELECT to_f(100.0) AS f;\n",
    )
    .unwrap();
    let out = eddy()
        .current_dir(&dir)
        .arg("run")
        .arg(&script)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("| 212.0 |"), "{stdout}");
    assert!(dir.join("to_f/target/components/to_f.wasm").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_continuous_runs_the_demo_queries_for_the_duration_and_reports_them() {
    // The README's main job: the generator, the anomaly UDF in wasm, a window and a push query.
    eddy_tests::components();
    let out = eddy()
        .args(["run", "queries/continuous.sql", "--duration", "2s"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| CAR      | TIMESTAMP           | SCORE  | LABEL"),
        "stdout:\n{stdout}"
    );
    assert!(
        stdout.contains("(5 rows from push query TRANSIENT_QUERY_2)"),
        "stdout:\n{stdout}"
    );
    assert!(stdout.contains("CSAS_ANOMALIES_0"), "stdout:\n{stdout}");
    // The summary after the run: the scoring query read events and failed none.
    let summary = stderr
        .lines()
        .find(|l| l.starts_with("CSAS_ANOMALIES_0:"))
        .unwrap_or_else(|| panic!("no summary in stderr:\n{stderr}"));
    assert!(summary.ends_with("0 bad, 0 late, 0 failed"), "{summary}");
}

#[test]
fn run_loads_the_udf_dir_before_the_script() {
    let dir = std::env::temp_dir().join(format!("eddy-cli-udfs-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::copy(eddy_tests::component("tag_v2"), dir.join("tag.wasm")).unwrap();
    let script = dir.join("tags.sql");
    std::fs::write(
        &script,
        "SELECT tag(event_id) AS t FROM car_sensor(2, 1);\n",
    )
    .unwrap();
    let out = eddy()
        .arg("run")
        .arg(&script)
        .arg("--udf-dir")
        .arg(&dir)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "stdout:\n{stdout}\nstderr:\n{stderr}");
    assert!(
        stdout.contains("| v2:0 |") && stdout.contains("| v2:1 |"),
        "{stdout}"
    );
    assert!(stderr.contains("UDF directory: tag from"), "{stderr}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_trap_under_capture_dir_replays_to_the_same_error_and_clean_on_the_fix() {
    let dir = std::env::temp_dir().join(format!("eddy-cli-replay-{}", std::process::id()));
    let captures = dir.join("captures");
    std::fs::create_dir_all(&dir).unwrap();
    let script = dir.join("trap.sql");
    std::fs::write(
        &script,
        format!(
            "CREATE FUNCTION panic_if_negative FROM '{}' WITH (timeout = '2s');\n\
             SELECT panic_if_negative(x) FROM (VALUES (1.5), (-2.0)) AS t(x);\n",
            eddy_tests::component("evil").display()
        ),
    )
    .unwrap();
    let out = eddy()
        .arg("run")
        .arg(&script)
        .arg("--capture-dir")
        .arg(&captures)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let files: Vec<_> = std::fs::read_dir(&captures)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");

    let same = eddy()
        .args(["udf", "replay"])
        .arg(&files[0])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&same.stdout);
    assert_eq!(same.status.code(), Some(2), "{stdout}");
    let captured = stdout
        .lines()
        .find_map(|l| l.strip_prefix("captured  "))
        .unwrap_or_else(|| panic!("{stdout}"));
    assert!(
        captured.starts_with("trap: UDF 'panic_if_negative' trapped: "),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("replayed  {captured} (version ")),
        "{stdout}"
    );
    assert!(stdout.contains("\nsame outcome as captured\n"), "{stdout}");
    assert!(
        stdout.contains("clock     stopped: wall clock at the Unix epoch, monotonic clock at 0"),
        "{stdout}"
    );
    assert!(
        stdout.contains("limits    max_memory 536870912 bytes, timeout 2s, max_log_lines 100"),
        "{stdout}"
    );

    let fixed = eddy()
        .args(["udf", "replay"])
        .arg(&files[0])
        .arg("--component")
        .arg(eddy_tests::component("evil_fixed"))
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&fixed.stdout);
    assert_eq!(fixed.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("replayed  ok: 2 rows, no errors (version "),
        "{stdout}"
    );
    assert!(
        stdout.contains("a different outcome from the captured one"),
        "{stdout}"
    );
    assert!(stdout.contains("| -2.0 | 0.0    |"), "{stdout}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn run_rollout_shadows_promotes_and_rolls_back_as_the_readme_shows() {
    eddy_tests::components();
    let out = eddy()
        .args(["run", "queries/rollout.sql"])
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "stdout:\n{stdout}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let row = |property: &str| -> String {
        stdout
            .lines()
            .find(|l| l.starts_with(&format!("| {property} ")))
            .unwrap_or_else(|| panic!("no {property} in:\n{stdout}"))
            .split('|')
            .nth(2)
            .unwrap()
            .trim()
            .to_string()
    };
    // Every fourth argument is NULL in both versions; the other 750 rows differ.
    assert_eq!(row("shadow_rows_compared"), "1000");
    assert_eq!(row("shadow_rows_differing"), "750");
    assert_eq!(
        row("shadow_difference_2"),
        "event_id=2: serving v1:2, shadow v2:2"
    );
    let tags: Vec<&str> = stdout
        .lines()
        .filter(|l| l.starts_with("| v1:") || l.starts_with("| v2:"))
        .collect();
    assert_eq!(
        tags,
        ["| v2:0 |", "| v2:1 |", "| v1:0 |", "| v1:1 |"],
        "{stdout}"
    );
}
