//! A run's folder: its crash-safe checkpoint (model, optimizer and progress in one file written
//! atomically), the state it records and `metrics.csv`.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::cache::MAX_CACHE_BYTES;

/// One epoch's row of `metrics.csv`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EpochRow {
    pub epoch: usize,
    pub seconds: f64,
    pub loss: f64,
    pub dice_loss: f64,
    pub l2_loss: Option<f64>,
    pub kl_loss: Option<f64>,
    pub lr: f64,
    /// Validation Dice per region (WT, TC, ET) when measured this epoch.
    pub val_dice: Option<[f64; 3]>,
}

/// The state saved with every checkpoint.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct RunState {
    /// Epochs completed.
    pub epochs_done: usize,
    pub best_mean_dice: Option<f64>,
    pub history: Vec<EpochRow>,
    pub train: Vec<PathBuf>,
    pub val: Vec<PathBuf>,
    pub fingerprint: String,
}

const CHECKPOINT_MAGIC: &[u8; 8] = b"NVNCKPT1";

/// Where a run keeps its files.
pub struct RunDir(pub PathBuf);

impl RunDir {
    pub fn config(&self) -> PathBuf {
        self.0.join("config.toml")
    }
    pub fn checkpoint(&self) -> PathBuf {
        self.0.join("checkpoint.nvck")
    }
    pub fn last(&self) -> PathBuf {
        self.0.join("last.bpk")
    }
    pub fn best(&self) -> PathBuf {
        self.0.join("best.bpk")
    }
    pub fn metrics(&self) -> PathBuf {
        self.0.join("metrics.csv")
    }
    pub fn split(&self) -> PathBuf {
        self.0.join("split.json")
    }
}

/// Model, optimizer and state in one file, written atomically: a kill at any moment leaves the
/// previous checkpoint or the new one, never a mix.
pub(super) fn write_checkpoint(
    path: &Path,
    state: &RunState,
    model: Vec<u8>,
    optim: Vec<u8>,
) -> Result<(), CheckpointError> {
    let json = serde_json::to_vec(state).map_err(|error| CheckpointError::State {
        file: path.display().to_string(),
        error,
    })?;
    let mut out = Vec::with_capacity(32 + json.len() + model.len() + optim.len());
    out.extend_from_slice(CHECKPOINT_MAGIC);
    for part in [&json, &model, &optim] {
        out.extend_from_slice(&(part.len() as u64).to_le_bytes());
        out.extend_from_slice(part);
    }
    crate::io::fsutil::write_atomic(path, &out).map_err(|error| CheckpointError::Io {
        path: path.to_path_buf(),
        error,
    })
}

pub(super) fn read_checkpoint(
    path: &Path,
) -> Result<(RunState, Vec<u8>, Vec<u8>), CheckpointError> {
    let file = path.display().to_string();
    let bytes = crate::io::fsutil::read_regular(path, MAX_CACHE_BYTES).map_err(|error| {
        CheckpointError::Io {
            path: path.to_path_buf(),
            error,
        }
    })?;
    let bad = || CheckpointError::Incomplete { file: file.clone() };
    if bytes.len() < 8 || &bytes[..8] != CHECKPOINT_MAGIC {
        return Err(bad());
    }
    let mut at = 8;
    let mut parts = Vec::new();
    for _ in 0..3 {
        let len = bytes
            .get(at..at + 8)
            .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
            .ok_or_else(bad)?;
        let part = bytes
            .get(at + 8..(at + 8).saturating_add(len))
            .ok_or_else(bad)?;
        parts.push(part.to_vec());
        at += 8 + len;
    }
    let state: RunState = serde_json::from_slice(&parts[0])
        .map_err(|error| CheckpointError::State { file, error })?;
    let optim = parts.pop().unwrap();
    let model = parts.pop().unwrap();
    Ok((state, model, optim))
}

/// `metrics.csv`: one row per epoch.
pub fn metrics_csv(history: &[EpochRow]) -> String {
    let mut s = String::from(
        "epoch,seconds,loss,dice_loss,l2_loss,kl_loss,lr,val_dice_WT,val_dice_TC,val_dice_ET\n",
    );
    let opt = |v: Option<f64>| v.map(|x| format!("{x}")).unwrap_or_default();
    for r in history {
        s.push_str(&format!(
            "{},{:.3},{},{},{},{},{},{},{},{}\n",
            r.epoch,
            r.seconds,
            r.loss,
            r.dice_loss,
            opt(r.l2_loss),
            opt(r.kl_loss),
            r.lr,
            opt(r.val_dice.map(|d| d[0])),
            opt(r.val_dice.map(|d| d[1])),
            opt(r.val_dice.map(|d| d[2])),
        ));
    }
    s
}

/// A checkpoint that cannot be written or read back whole.
#[derive(Debug, thiserror::Error)]
pub enum CheckpointError {
    #[error("{}: {error}", path.display())]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{file}: not a complete nvnet checkpoint")]
    Incomplete { file: String },
    #[error("{file}: {error}")]
    State {
        file: String,
        error: serde_json::Error,
    },
    #[error("checkpoint {part}: {error}")]
    Record {
        part: &'static str,
        error: burn::record::RecorderError,
    },
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A resumed run rewrites `metrics.csv` from the checkpoint's history: every number must
    /// come back to the bit, or its rows differ from an uninterrupted run's in the last digit.
    #[test]
    fn the_history_comes_back_from_a_checkpoint_to_the_bit() {
        let mut rng = crate::data::rng::Rng::new(3);
        let mut history: Vec<EpochRow> = (1..=200)
            .map(|epoch| EpochRow {
                epoch,
                seconds: rng.range(0.0, 100.0),
                loss: rng.unit(),
                dice_loss: rng.unit(),
                l2_loss: Some(rng.normal().abs()),
                kl_loss: Some(rng.unit() * 1e-3),
                lr: 1e-3 * rng.unit(),
                val_dice: Some([rng.unit(), rng.unit(), rng.unit()]),
            })
            .collect();
        // A loss whose shortest decimal form a fast float parser reads one bit off.
        history[0].loss = 0.9362708106637001;
        let state = RunState {
            epochs_done: history.len(),
            best_mean_dice: Some(rng.unit()),
            history,
            train: vec![],
            val: vec![],
            fingerprint: "f".into(),
        };
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("checkpoint.nvck");
        write_checkpoint(&path, &state, vec![1, 2], vec![3]).unwrap();
        let (back, model, optim) = read_checkpoint(&path).unwrap();
        assert_eq!((model, optim), (vec![1, 2], vec![3]));
        assert_eq!(back.best_mean_dice, state.best_mean_dice);
        for (a, b) in state.history.iter().zip(&back.history) {
            assert_eq!(a, b, "epoch {}", a.epoch);
        }
        assert_eq!(metrics_csv(&state.history), metrics_csv(&back.history));
    }
}
