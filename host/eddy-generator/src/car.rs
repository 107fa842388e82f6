//! Per-car state model: a driving cycle plus the engine, cooling, electrical and tyre
//! physics that turn it into the 17 correlated sensor readings.
//!
//! Every reading is a smooth function of a handful of latent quantities (speed, throttle,
//! acceleration, coolant temperature, tyre warmth, state of charge, road roughness) plus a
//! few per-car constants and small measurement noise. Keeping the normal manifold this
//! low-dimensional is what lets an autoencoder reconstruct normal rows tightly and flag the
//! perturbations in `anomaly.rs`.

use crate::rng::Rng;
use crate::{
    ACC_11, BATTERY_PCT, BATTERY_V, COOLANT, CURRENT, INTAKE_AIR_FLOW, INTAKE_AIR_TEMP, N_FEATURES,
    SPEED, THROTTLE, TIRE_11, VIBRATION,
};

/// Seconds of simulated time per physics substep at most; larger intervals are subdivided
/// so the dynamics do not change character with `interval_ms`.
const MAX_SUBSTEP_S: f64 = 1.0;
/// Caps the work per event for very long intervals; by then the state has decorrelated anyway.
const MAX_SUBSTEPS: u32 = 120;

/// Thermostat regulation time constant (s) once the engine is near its setpoint.
const TAU_COOLANT_S: f64 = 40.0;
/// Tyre carcass warming time constant (s).
const TAU_TYRE_S: f64 = 400.0;
/// Longest stretch of trip (s) a car may already have driven before the stream starts.
const BURN_IN_MAX_S: u64 = 2400;
/// Cool-down time constant (s) of a parked engine.
const TAU_ENGINE_COOLDOWN_S: f64 = 5400.0;
/// Parasitic drain (percentage points per second) of a parked car's battery.
const PARKED_DRAIN_PCT_PER_S: f64 = 0.2 / 3600.0;
/// Correlation time (s) of the driver's deviation from the ideal acceleration.
const TAU_DRIVER_S: f64 = 6.0;
/// Correlation time (s) of road roughness seen by the accelerometers.
const TAU_ROAD_S: f64 = 0.5;

/// Measurement noise (standard deviation) of the fixed-noise sensors; the rest scale with level.
pub(crate) mod noise {
    /// °C
    pub(crate) const COOLANT: f64 = 0.35;
    /// °C
    pub(crate) const INTAKE_AIR_TEMP: f64 = 0.5;
    /// percentage points
    pub(crate) const BATTERY_PCT: f64 = 0.1;
    /// V
    pub(crate) const BATTERY_V: f64 = 0.05;
    /// A
    pub(crate) const CURRENT: f64 = 0.4;
    /// km/h
    pub(crate) const SPEED: f64 = 0.4;
    /// fraction of full throttle
    pub(crate) const THROTTLE: f64 = 0.025;
    /// bar
    pub(crate) const TIRE: f64 = 0.005;
    /// m/s²
    pub(crate) const ACCEL: f64 = 0.03;
    /// Relative noise of the engine vibration amplitude.
    pub(crate) const VIBRATION_REL: f64 = 0.055;
}

/// Time-step constants shared by all cars, derived once from `interval_ms`.
#[derive(Debug, Clone)]
pub(crate) struct Clock {
    substeps: u32,
    h: f64,
    coolant_relax: f64,
    tyre_relax: f64,
    driver_decay: f64,
    driver_kick: f64,
    road_decay: f64,
    road_kick: f64,
}

impl Clock {
    pub(crate) fn new(interval_ms: i64) -> Self {
        let dt = interval_ms.max(0) as f64 / 1000.0;
        if dt <= 0.0 {
            return Self::fixed(0.0, 0);
        }
        let substeps = ((dt / MAX_SUBSTEP_S).ceil() as u32).clamp(1, MAX_SUBSTEPS);
        Self::fixed(dt / f64::from(substeps), substeps)
    }

    /// `substeps` steps of `h` seconds per advance.
    fn fixed(h: f64, substeps: u32) -> Self {
        // Exact discretisations of first-order lags and Ornstein-Uhlenbeck processes, so
        // the stationary spreads do not depend on the step length.
        let driver_decay = (-h / TAU_DRIVER_S).exp();
        let road_decay = (-h / TAU_ROAD_S).exp();
        Self {
            substeps,
            h,
            coolant_relax: 1.0 - (-h / TAU_COOLANT_S).exp(),
            tyre_relax: 1.0 - (-h / TAU_TYRE_S).exp(),
            driver_decay,
            driver_kick: (1.0 - driver_decay * driver_decay).sqrt(),
            road_decay,
            road_kick: (1.0 - road_decay * road_decay).sqrt(),
        }
    }
}

/// One event's readings: noisy values and the per-feature noise std they were drawn with
/// (the latter scales the subtle `sensor_drift` anomaly).
#[derive(Debug, Clone)]
pub(crate) struct Sample {
    pub(crate) values: [f64; N_FEATURES],
    pub(crate) sigma: [f64; N_FEATURES],
}

/// Persistent state of one simulated car.
#[derive(Debug, Clone)]
pub(crate) struct Car {
    rng: Rng,
    firmware: i64,
    // Per-car constants ("drift" between individual vehicles).
    tyre_base: [f64; 4],
    coolant_setpoint: f64,
    ambient: f64,
    vibration_gain: f64,
    // Dynamic state; speeds in m/s.
    speed: f64,
    accel: f64,
    throttle: f64,
    target: f64,
    target_left_s: f64,
    trip_left_s: f64,
    driver: f64,
    coolant: f64,
    tyre_warmth: f64,
    soc: f64,
    road: f64,
}

impl Car {
    /// Car `index` (0-based) of generator `seed`, somewhere into a trip at `start_ms`.
    pub(crate) fn new(seed: u64, index: u32) -> Self {
        let mut rng = Rng::new(seed, 2 * u64::from(index) + 1);
        let firmware = if rng.below(2) == 0 { 1000 } else { 2000 };
        let base = rng.uniform(2.27, 2.43);
        let mut tyre_base = [0.0; 4];
        for (i, p) in tyre_base.iter_mut().enumerate() {
            // Rear tyres (21, 22) run slightly softer, as most placards specify.
            let axle = if i < 2 { 0.0 } else { -0.03 };
            *p = base + axle + rng.uniform(-0.003, 0.003);
        }
        let coolant_setpoint = rng.uniform(88.0, 92.0);
        let ambient = rng.uniform(7.0, 9.0);
        let vibration_gain = rng.uniform(0.97, 1.03);
        let soc = rng.uniform(68.0, 96.0);
        let mut car = Self {
            rng,
            firmware,
            tyre_base,
            coolant_setpoint,
            ambient,
            vibration_gain,
            speed: 0.0,
            accel: 0.0,
            throttle: 0.0,
            target: 0.0,
            target_left_s: 0.0,
            trip_left_s: 0.0,
            driver: 0.0,
            coolant: coolant_setpoint,
            tyre_warmth: 0.0,
            soc,
            road: 0.0,
        };
        car.road = car.rng.normal();
        car.start_trip();
        // Enter the stream at a random point of a trip, so short streams look like long
        // ones instead of a fleet that all starts cold at the same instant.
        // Coarse 4 s steps keep creating a large fleet cheap; only the end state matters.
        let burn_in = Clock::fixed(4.0, 1);
        for _ in 0..car.rng.below(BURN_IN_MAX_S / 4) {
            car.substep(&burn_in);
        }
        car
    }

    /// Ends a parked period of random length and sets off on a new trip. Parking is not
    /// reported (the telematics unit sleeps with the ignition off); what it leaves behind
    /// is an engine and tyres that cooled toward ambient and a slightly drained battery.
    fn start_trip(&mut self) {
        let parked_s = if self.rng.f64() < 0.6 {
            self.rng.uniform(300.0, 3600.0)
        } else {
            self.rng.uniform(7200.0, 43_200.0)
        };
        let cooled = (-parked_s / TAU_ENGINE_COOLDOWN_S).exp();
        self.coolant = self.ambient + (self.coolant - self.ambient) * cooled;
        self.tyre_warmth *= (-parked_s / TAU_TYRE_S).exp();
        self.soc = (self.soc - PARKED_DRAIN_PCT_PER_S * parked_s).max(5.0);
        self.trip_left_s = self.rng.uniform(1200.0, 4800.0);
        self.new_target();
    }

    pub(crate) fn firmware(&self) -> i64 {
        self.firmware
    }

    /// The driver picks a new cruising goal: a stop, town, country road or motorway.
    fn new_target(&mut self) {
        let r = self.rng.f64();
        let (kmh, hold_s) = if r < 0.15 {
            (0.0, self.rng.uniform(8.0, 45.0))
        } else if r < 0.50 {
            (self.rng.uniform(20.0, 60.0), self.rng.uniform(20.0, 90.0))
        } else if r < 0.80 {
            (self.rng.uniform(60.0, 100.0), self.rng.uniform(40.0, 180.0))
        } else {
            (
                self.rng.uniform(100.0, 150.0),
                self.rng.uniform(60.0, 300.0),
            )
        };
        self.target = kmh / 3.6;
        self.target_left_s = hold_s;
    }

    /// Advances the state by one event interval.
    pub(crate) fn advance(&mut self, clock: &Clock) {
        for _ in 0..clock.substeps {
            self.substep(clock);
        }
    }

    fn substep(&mut self, c: &Clock) {
        let h = c.h;
        self.trip_left_s -= h;
        if self.trip_left_s <= 0.0 {
            // Trip over: pull up, then park.
            self.target = 0.0;
            if self.speed == 0.0 {
                self.start_trip();
            }
        } else {
            self.target_left_s -= h;
            if self.target_left_s <= 0.0 {
                self.new_target();
            }
        }
        self.driver = self.driver * c.driver_decay + 0.3 * c.driver_kick * self.rng.normal();
        self.road = self.road * c.road_decay + c.road_kick * self.rng.normal();

        let v = self.speed;
        let wanted = if self.target > 0.0 {
            (0.15 * (self.target - v)).clamp(-3.0, 2.0) + self.driver
        } else {
            // Come to a firm stop and stay there: no creeping from driver noise.
            (-0.25 * v - 0.5).max(-3.0)
        };
        let resistance = if v > 0.01 {
            0.12 + 0.000_28 * v * v
        } else {
            0.0
        };
        // Traction is grip-limited at low speed and power-limited above ~80 km/h.
        let max_traction = (70.0 / v.max(1.0)).min(3.2);
        let (throttle, accel) = if wanted + resistance >= 0.0 {
            let t = ((wanted + resistance) / max_traction).min(1.0);
            (t, t * max_traction - resistance)
        } else {
            (0.0, wanted)
        };
        let next = (v + accel * h).max(0.0);
        self.accel = (next - v) / h;
        self.speed = next;
        self.throttle = throttle;

        let load = self.air_flow() / 100.0;
        if self.coolant < self.coolant_setpoint - 5.0 {
            // Thermostat closed: the engine warms at a rate set by the fuel it burns.
            self.coolant += (0.10 + 0.6 * load) * h;
        } else {
            let regulated = self.coolant_setpoint + 5.0 * load;
            self.coolant += (regulated - self.coolant) * c.coolant_relax;
        }
        self.tyre_warmth += (0.2 * self.speed_kmh() - self.tyre_warmth) * c.tyre_relax;
        // Charges while the alternator holds the bus above the battery's rest voltage,
        // so a full battery drains slowly and a low one recovers slowly.
        self.soc = (self.soc + 0.0005 * (self.voltage() - 13.9) * h).clamp(5.0, 100.0);
    }

    fn speed_kmh(&self) -> f64 {
        self.speed * 3.6
    }

    /// CVT-style engine speed: follows road speed and rises with load.
    fn rpm(&self) -> f64 {
        750.0 + 23.0 * self.speed_kmh() + 600.0 * self.throttle
    }

    /// Mass air flow (g/s) of a ~2 l engine: rpm times throttle-dependent cylinder filling.
    fn air_flow(&self) -> f64 {
        self.rpm() / 1000.0 * (2.5 + 24.0 * self.throttle)
    }

    /// PTC auxiliary heater (A): its resistance rises with coolant temperature, so the
    /// draw falls off linearly as the engine warms.
    fn heater(&self) -> f64 {
        (0.5 * (100.0 - self.coolant)).max(0.0)
    }

    /// 12 V system load (A): base electronics, fuel pump and injectors, the heater.
    fn current(&self) -> f64 {
        14.0 + 0.15 * self.air_flow() + self.heater()
    }

    /// Bus voltage: the smart alternator charges harder the emptier the battery (12.7 V
    /// floating a full one, 14.4 V for a low one), less the drop across the wiring.
    fn voltage(&self) -> f64 {
        12.7 + 0.068 * (92.0 - self.soc) - 0.004 * (self.current() - 20.0)
    }

    /// Readings for the current state: physics plus measurement noise.
    pub(crate) fn sample(&mut self) -> Sample {
        let vk = self.speed_kmh();
        let rpm = self.rpm();
        let flow = self.air_flow();
        let current = self.current();
        // Under-bonnet heat soak warms the intake air; ram air at speed cools it.
        let intake =
            self.ambient + 0.15 * (self.coolant - self.ambient) - 0.02 * vk + 2.5 * self.throttle;
        let vibration = self.vibration_gain * (0.25 + 0.000_25 * rpm + 0.5 * self.throttle);
        let longitudinal = self.accel + self.road * (0.015 + 0.001 * vk);

        let mut sigma = [0.0; N_FEATURES];
        let mut clean = [0.0; N_FEATURES];
        clean[COOLANT] = self.coolant;
        sigma[COOLANT] = noise::COOLANT;
        clean[INTAKE_AIR_TEMP] = intake;
        sigma[INTAKE_AIR_TEMP] = noise::INTAKE_AIR_TEMP;
        clean[INTAKE_AIR_FLOW] = flow;
        sigma[INTAKE_AIR_FLOW] = 0.6 + 0.02 * flow;
        clean[BATTERY_PCT] = self.soc;
        sigma[BATTERY_PCT] = noise::BATTERY_PCT;
        clean[BATTERY_V] = self.voltage();
        sigma[BATTERY_V] = noise::BATTERY_V;
        clean[CURRENT] = current;
        sigma[CURRENT] = noise::CURRENT;
        clean[SPEED] = vk;
        sigma[SPEED] = noise::SPEED;
        clean[VIBRATION] = vibration;
        sigma[VIBRATION] = noise::VIBRATION_REL * vibration;
        clean[THROTTLE] = self.throttle;
        sigma[THROTTLE] = noise::THROTTLE;
        for (i, base) in self.tyre_base.iter().enumerate() {
            clean[TIRE_11 + i] = base + 0.0035 * self.tyre_warmth;
            sigma[TIRE_11 + i] = noise::TIRE;
        }
        for i in 0..4 {
            clean[ACC_11 + i] = longitudinal;
            sigma[ACC_11 + i] = noise::ACCEL;
        }

        let mut values = [0.0; N_FEATURES];
        for i in 0..N_FEATURES {
            values[i] = clean[i] + sigma[i] * self.rng.normal();
        }
        // A stationary wheel-speed sensor reads exactly zero, never negative.
        values[SPEED] = if self.speed < 0.03 {
            0.0
        } else {
            values[SPEED].max(0.0)
        };
        values[THROTTLE] = values[THROTTLE].clamp(0.0, 1.0);
        values[INTAKE_AIR_FLOW] = values[INTAKE_AIR_FLOW].max(0.0);
        values[BATTERY_PCT] = values[BATTERY_PCT].clamp(0.0, 100.0);
        Sample { values, sigma }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Simulates `seconds` at 1 s steps, recording (coolant, km/h, throttle, soc).
    fn trace(car: &mut Car, seconds: usize) -> Vec<(f64, f64, f64, f64)> {
        let clock = Clock::new(1000);
        (0..seconds)
            .map(|_| {
                car.advance(&clock);
                (car.coolant, car.speed_kmh(), car.throttle, car.soc)
            })
            .collect()
    }

    #[test]
    fn drives_stops_and_stays_physical() {
        let mut car = Car::new(1, 0);
        let t = trace(&mut car, 8 * 3600);
        let max_speed = t.iter().map(|x| x.1).fold(0.0, f64::max);
        assert!(
            max_speed > 100.0 && max_speed < 175.0,
            "max speed {max_speed}"
        );
        assert!(t.iter().any(|x| x.1 == 0.0), "never stops");
        assert!(t.iter().all(|x| x.1 >= 0.0 && (0.0..=1.0).contains(&x.2)));
        assert!(t.iter().all(|x| (40.0..=100.0).contains(&x.3)), "soc");
        let hottest = t.iter().map(|x| x.0).fold(0.0, f64::max);
        assert!(hottest < car.coolant_setpoint + 8.0, "hottest {hottest}");
    }

    #[test]
    fn cold_engines_warm_up_within_a_trip() {
        let mut car = Car::new(5, 3);
        let setpoint = car.coolant_setpoint;
        let t = trace(&mut car, 8 * 3600);
        let cold: Vec<usize> = (0..t.len() - 900).filter(|&i| t[i].0 < 30.0).collect();
        assert!(!cold.is_empty(), "no cold start in 8 hours");
        for i in cold {
            assert!(
                t[i..i + 900].iter().any(|x| x.0 > setpoint - 6.0),
                "still cold 15 min after t={i}"
            );
        }
    }

    #[test]
    fn long_intervals_are_subdivided() {
        let c = Clock::new(60_000);
        assert_eq!(c.substeps, 60);
        assert!((c.h - 1.0).abs() < 1e-12);
        let zero = Clock::new(0);
        assert_eq!(zero.substeps, 0);
        let mut car = Car::new(3, 2);
        let before = car.coolant;
        car.advance(&zero);
        assert_eq!(car.coolant, before);
    }
}
