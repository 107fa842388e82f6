//! The anomaly model run natively with tract: the twin the wasm UDF is measured against.
//!
//! Same ONNX file, same tract version as `udfs/anomaly`, so differences between the two are
//! the wasm boundary's (and the compiler's), not the model's.

use std::path::Path;
use std::sync::Arc;

use tract_onnx::prelude::*;

/// Sensor values per event the model reads (`eddy_generator::FEATURES`).
pub const FEATURE_COUNT: usize = 17;

/// What can go wrong loading or running the model.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// tract refused the model or the input.
    #[error("anomaly model: {0}")]
    Tract(String),
    /// The rows are not whole feature vectors.
    #[error("{0} values is not a whole number of {FEATURE_COUNT}-value rows")]
    Shape(usize),
}

impl From<TractError> for Error {
    fn from(e: TractError) -> Self {
        Error::Tract(format!("{e:#}"))
    }
}

/// Result with this crate's [`Error`].
pub type Result<T, E = Error> = std::result::Result<T, E>;

/// An optimized, runnable plan of the autoencoder.
pub struct NativeAnomalyModel {
    plan: Arc<TypedRunnableModel>,
}

/// Scores and flags of one batch.
#[derive(Debug, Clone, PartialEq)]
pub struct Scored {
    /// Reconstruction error per row.
    pub score: Vec<f32>,
    /// Whether the row is over the model's threshold.
    pub anomaly: Vec<bool>,
}

impl NativeAnomalyModel {
    /// Loads `udfs/anomaly/model/autoencoder.onnx` or another file of the same shape.
    pub fn load(path: &Path) -> Result<NativeAnomalyModel> {
        // Exactly as the guest does it: a symbolic batch dimension, then optimize.
        let model = tract_onnx::onnx().model_for_path(path)?;
        let rows = model.sym("N");
        let plan = model
            .with_input_fact(0, f32::fact([rows.to_dim(), FEATURE_COUNT.to_dim()]).into())?
            .into_optimized()?
            .into_runnable()?;
        Ok(NativeAnomalyModel { plan })
    }

    /// Scores rows given as `FEATURE_COUNT` consecutive values each, in one inference.
    pub fn score(&self, values: &[f32]) -> Result<Scored> {
        if !values.len().is_multiple_of(FEATURE_COUNT) {
            return Err(Error::Shape(values.len()));
        }
        let rows = values.len() / FEATURE_COUNT;
        let input = Tensor::from_shape(&[rows, FEATURE_COUNT], values)?;
        let outputs = self.plan.run(tvec!(input.into()))?;
        let score = outputs[0]
            .to_plain_array_view::<f32>()?
            .iter()
            .copied()
            .collect();
        let anomaly = outputs[1]
            .to_plain_array_view::<bool>()?
            .iter()
            .copied()
            .collect();
        Ok(Scored { score, anomaly })
    }
}
