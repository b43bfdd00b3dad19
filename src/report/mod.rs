//! What a run tells the world once it knows how it went: the health verdict, metrics,
//! notifications, and the outcome record they are all built from.

pub mod health; // size anomalies and the status verdict
pub mod metrics; // the Prometheus textfile
pub mod notify; // webhook, pings and command
pub mod outcome; // a run's result as the reporting channels see it
