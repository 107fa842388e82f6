//! Injected anomalies: one-event perturbations of the readings, never of the car's state,
//! so the stream is normal again on the next event.

use std::fmt;
use std::str::FromStr;

use crate::car::Sample;
use crate::rng::Rng;
use crate::{
    BATTERY_V, COOLANT, CURRENT, INTAKE_AIR_FLOW, INTAKE_AIR_TEMP, THROTTLE, TIRE_11, VIBRATION,
};

/// The kinds of anomaly the generator injects, each a distinct fault signature.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum AnomalyKind {
    /// Coolant reads 25–40 °C above the engine's state; intake air 3–6 °C warmer.
    Overheating,
    /// One tyre reads 0.6–1.0 bar below what the car's state implies.
    TireLeak,
    /// Engine vibration 3–5× what speed and throttle imply.
    VibrationSpike,
    /// Battery voltage collapses to 9.5–11 V while current draw jumps by 90–160 A.
    BatteryFault,
    /// Five analog sensors each off by 4–6 noise std, against their usual correlations.
    SensorDrift,
}

impl AnomalyKind {
    /// Every kind, in declaration order (the order used to pick one uniformly).
    pub const ALL: [AnomalyKind; 5] = [
        AnomalyKind::Overheating,
        AnomalyKind::TireLeak,
        AnomalyKind::VibrationSpike,
        AnomalyKind::BatteryFault,
        AnomalyKind::SensorDrift,
    ];

    /// The snake_case label written to the `anomaly` column.
    pub fn as_str(&self) -> &'static str {
        match self {
            AnomalyKind::Overheating => "overheating",
            AnomalyKind::TireLeak => "tire_leak",
            AnomalyKind::VibrationSpike => "vibration_spike",
            AnomalyKind::BatteryFault => "battery_fault",
            AnomalyKind::SensorDrift => "sensor_drift",
        }
    }

    /// Names (from [`crate::FEATURES`]) of the readings this kind perturbs.
    pub fn features(&self) -> &'static [&'static str] {
        match self {
            AnomalyKind::Overheating => &["coolant_temp", "intake_air_temp"],
            AnomalyKind::TireLeak => &[
                "tire_pressure_11",
                "tire_pressure_12",
                "tire_pressure_21",
                "tire_pressure_22",
            ],
            AnomalyKind::VibrationSpike => &["engine_vibration_amplitude"],
            AnomalyKind::BatteryFault => &["battery_voltage", "current_draw"],
            AnomalyKind::SensorDrift => &[
                "intake_air_temp",
                "intake_air_flow_speed",
                "battery_voltage",
                "engine_vibration_amplitude",
                "throttle_pos",
            ],
        }
    }

    /// Applies this kind's perturbation to one event's readings.
    pub(crate) fn apply(self, sample: &mut Sample, rng: &mut Rng) {
        let v = &mut sample.values;
        match self {
            AnomalyKind::Overheating => {
                v[COOLANT] += rng.uniform(25.0, 40.0);
                v[INTAKE_AIR_TEMP] += rng.uniform(3.0, 6.0);
            }
            AnomalyKind::TireLeak => {
                let tyre = TIRE_11 + rng.below(4) as usize;
                v[tyre] -= rng.uniform(0.6, 1.0);
            }
            AnomalyKind::VibrationSpike => {
                v[VIBRATION] *= rng.uniform(3.0, 5.0);
            }
            AnomalyKind::BatteryFault => {
                v[BATTERY_V] = rng.uniform(9.5, 11.0);
                v[CURRENT] += rng.uniform(90.0, 160.0);
            }
            AnomalyKind::SensorDrift => {
                // A drifting shared reference on the ECU's analog inputs: the engine reads
                // lighter-loaded and smoother than the pedal says, the intake warmer and the
                // bus lower than the battery's charge implies. Each sign opposes a normal
                // correlation (throttle up => air flow and vibration up).
                let s = &sample.sigma;
                let mut k = || rng.uniform(4.0, 6.0);
                v[THROTTLE] = (v[THROTTLE] + k() * s[THROTTLE]).min(1.0);
                let flow_drop = k() * s[INTAKE_AIR_FLOW];
                // Floor keeps a near-idle air flow reading physical (positive).
                v[INTAKE_AIR_FLOW] = (v[INTAKE_AIR_FLOW] - flow_drop).max(0.5 * v[INTAKE_AIR_FLOW]);
                v[VIBRATION] -= k() * s[VIBRATION];
                v[INTAKE_AIR_TEMP] += k() * s[INTAKE_AIR_TEMP];
                v[BATTERY_V] -= k() * s[BATTERY_V];
            }
        }
    }
}

impl fmt::Display for AnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// Error for a label that names no [`AnomalyKind`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UnknownAnomalyKind(pub String);

impl fmt::Display for UnknownAnomalyKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "unknown anomaly kind {:?}", self.0)
    }
}

impl std::error::Error for UnknownAnomalyKind {}

impl FromStr for AnomalyKind {
    type Err = UnknownAnomalyKind;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        AnomalyKind::ALL
            .into_iter()
            .find(|k| k.as_str() == s)
            .ok_or_else(|| UnknownAnomalyKind(s.to_owned()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::FEATURES;

    #[test]
    fn names_round_trip() {
        let names: Vec<&str> = AnomalyKind::ALL.iter().map(|k| k.as_str()).collect();
        assert_eq!(
            names,
            [
                "overheating",
                "tire_leak",
                "vibration_spike",
                "battery_fault",
                "sensor_drift"
            ]
        );
        for k in AnomalyKind::ALL {
            assert_eq!(k.as_str().parse::<AnomalyKind>(), Ok(k));
            assert_eq!(k.to_string(), k.as_str());
            assert!(k.features().iter().all(|f| FEATURES.contains(f)));
        }
        assert!("nope".parse::<AnomalyKind>().is_err());
    }
}
