//! PLACEHOLDER config types (replaced by the real loader).
#![allow(missing_docs)]
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
#[error("{}: {message}", file.display())]
pub struct ConfigError {
    pub file: PathBuf,
    pub line: Option<usize>,
    pub key: Option<String>,
    pub message: String,
}
#[derive(Debug, Clone)]
pub struct Settings { pub file: PathBuf, pub backup: Backup, pub encryption: Encryption, pub targets: Vec<Target>, pub health: Health }
#[derive(Debug, Clone)]
pub struct Backup { pub name: String, pub sources: Vec<PathBuf>, pub exclude: Vec<String>, pub required: Vec<PathBuf>, pub one_file_system: bool, pub on_read_error: ReadErrorPolicy }
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum ReadErrorPolicy { Fail, Warn }
#[derive(Debug, Clone)]
pub struct Encryption { pub recipients: Vec<String>, pub recipients_file: Option<PathBuf>, pub identity: Option<PathBuf>, pub verify_without_identity: bool }
#[derive(Debug, Clone)]
pub struct Target { pub name: String, pub path: PathBuf, pub require_mount: bool, pub allow_volatile: bool, pub split: Split, pub min_free: u64, pub keep: Keep }
#[derive(Debug, Clone)]
pub enum Split { Auto, Off, Size(u64) }
#[derive(Debug, Clone, Default)]
pub struct Keep { pub last: Option<u32>, pub daily: Option<u32>, pub weekly: Option<u32>, pub monthly: Option<u32>, pub yearly: Option<u32>, pub max_age: Option<Duration> }
#[derive(Debug, Clone)]
pub struct Health { pub max_age: Duration, pub size_tolerance: u32 }
pub fn load(path: &Path) -> Result<Settings, ConfigError> {
    Err(ConfigError { file: path.into(), line: None, key: None, message: "placeholder".into() })
}
