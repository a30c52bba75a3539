//! The domain's names: MRI modalities, tumour regions, BraTS label conventions.

use serde::{Deserialize, Serialize};
use std::fmt;
use std::str::FromStr;

use crate::data::names::UnknownName;

/// One of the four MRI sequences of a BraTS case.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Modality {
    T1,
    T1ce,
    T2,
    Flair,
}

impl Modality {
    /// The product's default channel order (MONAI's BraTS order).
    pub const DEFAULT_ORDER: [Modality; 4] =
        [Modality::T1, Modality::T1ce, Modality::T2, Modality::Flair];

    /// The BraTS 2018–2021 file suffix (`_t1`, `_t1ce`, `_t2`, `_flair`).
    pub fn name(self) -> &'static str {
        match self {
            Modality::T1 => "t1",
            Modality::T1ce => "t1ce",
            Modality::T2 => "t2",
            Modality::Flair => "flair",
        }
    }

    /// The BraTS 2023+ file suffix (`-t1n`, `-t1c`, `-t2w`, `-t2f`).
    pub fn name_2023(self) -> &'static str {
        match self {
            Modality::T1 => "t1n",
            Modality::T1ce => "t1c",
            Modality::T2 => "t2w",
            Modality::Flair => "t2f",
        }
    }

    /// Parse a comma-separated channel order such as `t1,t1ce,t2,flair`.
    pub fn parse_list(text: &str) -> Result<Vec<Modality>, ModalityListError> {
        let list: Vec<Modality> = text
            .split(',')
            .map(|s| s.trim().parse())
            .collect::<Result<_, _>>()?;
        for (i, m) in list.iter().enumerate() {
            if list[..i].contains(m) {
                return Err(ModalityListError::Twice {
                    modality: *m,
                    list: text.to_string(),
                });
            }
        }
        Ok(list)
    }
}

/// A channel order that names an unknown modality or one twice.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ModalityListError {
    #[error(transparent)]
    Unknown(#[from] UnknownName),
    #[error("modality '{modality}' is listed twice in '{list}'")]
    Twice { modality: Modality, list: String },
}

impl fmt::Display for Modality {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Modality {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "t1" | "t1n" => Ok(Modality::T1),
            "t1ce" | "t1c" | "t1gd" => Ok(Modality::T1ce),
            "t2" | "t2w" => Ok(Modality::T2),
            "flair" | "t2f" => Ok(Modality::Flair),
            other => Err(UnknownName::new("modality", other, "t1, t1ce, t2 or flair")),
        }
    }
}

/// A nested tumour region, as predicted by one output channel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Region {
    /// Tumour core: necrosis + enhancing tumour.
    TC,
    /// Whole tumour: everything abnormal, edema included.
    WT,
    /// Enhancing tumour.
    ET,
}

impl Region {
    /// The product's default output order (MONAI's).
    pub const DEFAULT_ORDER: [Region; 3] = [Region::TC, Region::WT, Region::ET];
}

impl fmt::Display for Region {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(self, f)
    }
}

/// The BraTS label values: enhancing tumour is 4 up to 2021 and 3 from 2023.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum LabelConvention {
    #[default]
    Brats2018,
    Brats2023,
}

impl LabelConvention {
    /// The label value of the enhancing tumour.
    pub fn et_label(self) -> u8 {
        match self {
            LabelConvention::Brats2018 => 4,
            LabelConvention::Brats2023 => 3,
        }
    }

    /// Every label a map of this convention holds: background, necrosis, oedema, enhancing.
    pub fn labels(self) -> [u8; 4] {
        [0, 1, 2, self.et_label()]
    }

    pub fn name(self) -> &'static str {
        match self {
            LabelConvention::Brats2018 => "BraTS 2018 (0, 1, 2, 4)",
            LabelConvention::Brats2023 => "BraTS 2023 (0, 1, 2, 3)",
        }
    }
}

impl FromStr for LabelConvention {
    type Err = UnknownName;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "brats2018" | "brats2019" | "brats2020" | "brats2021" => Ok(LabelConvention::Brats2018),
            "brats2023" | "brats2024" => Ok(LabelConvention::Brats2023),
            other => Err(UnknownName::new(
                "label convention",
                other,
                "brats2018 or brats2023",
            )),
        }
    }
}
