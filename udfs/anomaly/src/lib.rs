//! Car-sensor anomaly detection: a small autoencoder (ONNX, run by tract) scores each event.
//!
//! The model is `model/autoencoder.onnx`, trained by `train/train.py` on normal generated
//! events. The graph does everything — standardisation, the network, the score (mean squared
//! reconstruction error in standardised units) and the threshold — so this crate only parses
//! rows, runs one inference per batch and hands the outputs back.
//!
//! Features, in model order (`eddy_generator::FEATURES`): coolant_temp, intake_air_temp,
//! intake_air_flow_speed, battery_percentage, battery_voltage, current_draw, speed,
//! engine_vibration_amplitude, throttle_pos, tire_pressure_11, tire_pressure_12,
//! tire_pressure_21, tire_pressure_22, accelerometer_11_value, accelerometer_12_value,
//! accelerometer_21_value, accelerometer_22_value.
use std::sync::{Arc, OnceLock};

use eddy_udf::udf;
use tract_onnx::prelude::*;

/// Number of sensor values the model takes per event.
const N: usize = 17;

static MODEL_BYTES: &[u8] = include_bytes!("../model/autoencoder.onnx");

type Row = Result<[f32; N], String>;

/// The optimized plan, built once per instance (an error is kept and reported per batch).
fn plan() -> Result<&'static Arc<TypedSimplePlan>, String> {
    static PLAN: OnceLock<Result<Arc<TypedSimplePlan>, String>> = OnceLock::new();
    PLAN.get_or_init(|| load().map_err(|e| format!("cannot load the anomaly model: {e:#}")))
        .as_ref()
        .map_err(Clone::clone)
}

fn load() -> TractResult<Arc<TypedSimplePlan>> {
    let model = tract_onnx::onnx().model_for_read(&mut &*MODEL_BYTES)?;
    let rows = model.sym("N");
    model
        .with_input_fact(0, f32::fact([rows.to_dim(), N.to_dim()]).into())?
        .into_optimized()?
        .into_runnable()
}

/// Scores every valid row in one inference; invalid rows keep their error.
/// Returns (score, anomaly) per row.
fn infer(rows: Vec<Row>) -> Result<Vec<Result<(f64, bool), String>>, String> {
    let valid: Vec<f32> = rows.iter().flatten().flatten().copied().collect();
    let n = valid.len() / N;
    let mut outputs: std::vec::IntoIter<(f64, bool)> = if n == 0 {
        Vec::new().into_iter()
    } else {
        let input = Tensor::from_shape(&[n, N], &valid).map_err(|e| e.to_string())?;
        let out = plan()?
            .run(tvec![input.into_tvalue()])
            .map_err(|e| format!("anomaly model failed: {e:#}"))?;
        let score = out[0]
            .to_plain_array_view::<f32>()
            .map_err(|e| format!("anomaly model output 'score': {e:#}"))?;
        let flag = out[1]
            .to_plain_array_view::<bool>()
            .map_err(|e| format!("anomaly model output 'anomaly': {e:#}"))?;
        if score.len() != n || flag.len() != n {
            return Err(format!(
                "anomaly model returned {} scores and {} flags for {n} rows",
                score.len(),
                flag.len()
            ));
        }
        score
            .iter()
            .zip(flag.iter())
            .map(|(s, f)| (f64::from(*s), *f))
            .collect::<Vec<_>>()
            .into_iter()
    };
    Ok(rows
        .into_iter()
        .map(|row| row.map(|_| outputs.next().expect("one output per valid row")))
        .collect())
}

/// Checks one row of doubles: exactly 17 finite values.
fn from_doubles(values: &[f64]) -> Row {
    if values.len() != N {
        return Err(format!("expected {N} sensor values, got {}", values.len()));
    }
    let mut row = [0f32; N];
    for (i, (v, out)) in values.iter().zip(&mut row).enumerate() {
        if !v.is_finite() {
            return Err(format!("value {} is not finite: {v}", i + 1));
        }
        *out = *v as f32;
    }
    Ok(row)
}

/// Parses "v1,v2,...,v17" (separators `,` or `#`, whitespace around values allowed).
fn from_text(text: &str) -> Row {
    let parts: Vec<&str> = text.split([',', '#']).map(str::trim).collect();
    if parts.len() != N {
        return Err(format!("expected {N} sensor values, got {}", parts.len()));
    }
    let mut row = [0f64; N];
    for (i, (part, out)) in parts.iter().zip(&mut row).enumerate() {
        *out = part
            .parse::<f64>()
            .map_err(|_| format!("value {} is not a number: '{part}'", i + 1))?;
    }
    from_doubles(&row)
}

fn scores(rows: Vec<Row>) -> Vec<Result<f64, String>> {
    let n = rows.len();
    match infer(rows) {
        Ok(r) => r.into_iter().map(|r| r.map(|(s, _)| s)).collect(),
        Err(e) => vec![Err(e); n],
    }
}

fn flags(rows: Vec<Row>) -> Vec<Result<bool, String>> {
    let n = rows.len();
    match infer(rows) {
        Ok(r) => r.into_iter().map(|r| r.map(|(_, a)| a)).collect(),
        Err(e) => vec![Err(e); n],
    }
}

/// Anomaly score of one event: the autoencoder's mean squared reconstruction error over the 17
/// standardised sensor values (FEATURES order: coolant_temp … accelerometer_22_value).
#[udf(batch)]
fn anomaly_score(features: Vec<&[f64]>) -> Vec<Result<f64, String>> {
    scores(features.into_iter().map(from_doubles).collect())
}

/// True when an event's 17 sensor values (FEATURES order) score above the model's threshold.
#[udf(batch)]
fn detect_anomaly(features: Vec<&[f64]>) -> Vec<Result<bool, String>> {
    flags(features.into_iter().map(from_doubles).collect())
}

/// anomaly_score over one string of the 17 sensor values separated by ',' or '#'.
#[udf(batch)]
fn anomaly_score_csv(sensor_values: Vec<&str>) -> Vec<Result<f64, String>> {
    scores(sensor_values.into_iter().map(from_text).collect())
}

/// detect_anomaly over one string of the 17 sensor values separated by ',' or '#'.
#[udf(batch)]
fn detect_anomaly_csv(sensor_values: Vec<&str>) -> Vec<Result<bool, String>> {
    flags(sensor_values.into_iter().map(from_text).collect())
}

eddy_udf::export!(
    anomaly_score,
    detect_anomaly,
    anomaly_score_csv,
    detect_anomaly_csv
);
