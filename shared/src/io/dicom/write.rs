//! A volume written as a DICOM MR series, one file per slice (explicit VR little endian, int16):
//! the phantoms as a scanner would export them, so that the DICOM path is tested end to end and
//! can be tried without a scanner.

use dicom_core::{DataElement, PrimitiveValue, Tag, VR};
use dicom_dictionary_std::{tags, uids};
use dicom_object::{FileMetaTableBuilder, InMemDicomObject};

use super::DicomError;
use crate::io::nifti::Geometry;

/// What a series says about itself.
pub struct SeriesInfo<'a> {
    pub patient_id: &'a str,
    pub study_uid: &'a str,
    pub series_uid: &'a str,
    pub number: i32,
    pub description: &'a str,
    /// ContrastBolusAgent (a post-contrast series).
    pub contrast_agent: Option<&'a str>,
}

/// DS values as DICOM writes them (at most 16 characters each).
fn ds(values: &[f64]) -> PrimitiveValue {
    PrimitiveValue::Strs(
        values
            .iter()
            .map(|v| {
                let s = format!("{v:.6}");
                let s = s.trim_end_matches('0').trim_end_matches('.');
                let s = if s == "-0" { "0" } else { s };
                s.chars().take(16).collect()
            })
            .collect(),
    )
}

/// The files of a series (name, bytes): slice k of `values` (file order, i fastest) in
/// `IM{k+1:04}`. The grid's rows are its j axis, its columns its i axis.
pub fn encode_series(
    info: &SeriesInfo,
    geometry: &Geometry,
    values: &[i16],
) -> Result<Vec<(String, Vec<u8>)>, DicomError> {
    let err = |problem: String| DicomError::Series {
        series: format!("series {} '{}'", info.number, info.description),
        problem,
    };
    let [nx, ny, nz] = geometry.dims;
    if values.len() != nx * ny * nz {
        return Err(err(format!(
            "{} values for a grid of {nx} × {ny} × {nz}",
            values.len()
        )));
    }
    if nx > u16::MAX as usize || ny > u16::MAX as usize {
        return Err(err(format!(
            "slices of {nx} × {ny} pixels are too large for DICOM"
        )));
    }
    let a = &geometry.affine;
    // RAS → LPS: x and y change sign.
    let lps = |c: usize| [-a[0][c], -a[1][c], a[2][c]];
    let length = |v: [f64; 3]| (v[0] * v[0] + v[1] * v[1] + v[2] * v[2]).sqrt();
    let (row, column, step, origin) = (lps(0), lps(1), lps(2), lps(3));
    let (di, dj) = (length(row), length(column));
    if di == 0.0 || dj == 0.0 {
        return Err(err("the grid has an axis of length 0".into()));
    }
    let orientation: Vec<f64> = row
        .iter()
        .map(|x| x / di)
        .chain(column.iter().map(|x| x / dj))
        .collect();
    let thickness = length(step);
    let mut files = Vec::with_capacity(nz);
    for k in 0..nz {
        let position: Vec<f64> = (0..3).map(|r| origin[r] + k as f64 * step[r]).collect();
        let instance_uid = format!("{}.{}", info.series_uid, k + 1);
        let mut obj = InMemDicomObject::new_empty();
        let mut put = |tag: Tag, vr: VR, value: PrimitiveValue| {
            obj.put(DataElement::new(tag, vr, value));
        };
        put(tags::SOP_CLASS_UID, VR::UI, uids::MR_IMAGE_STORAGE.into());
        put(tags::SOP_INSTANCE_UID, VR::UI, instance_uid.as_str().into());
        put(tags::MODALITY, VR::CS, "MR".into());
        put(tags::PATIENT_ID, VR::LO, info.patient_id.into());
        put(tags::STUDY_INSTANCE_UID, VR::UI, info.study_uid.into());
        put(tags::SERIES_INSTANCE_UID, VR::UI, info.series_uid.into());
        put(tags::SERIES_NUMBER, VR::IS, info.number.to_string().into());
        put(tags::SERIES_DESCRIPTION, VR::LO, info.description.into());
        put(tags::INSTANCE_NUMBER, VR::IS, (k + 1).to_string().into());
        put(
            tags::IMAGE_TYPE,
            VR::CS,
            PrimitiveValue::Strs(["ORIGINAL", "PRIMARY"].map(String::from).into()),
        );
        if let Some(agent) = info.contrast_agent {
            put(tags::CONTRAST_BOLUS_AGENT, VR::LO, agent.into());
        }
        put(tags::IMAGE_ORIENTATION_PATIENT, VR::DS, ds(&orientation));
        put(tags::IMAGE_POSITION_PATIENT, VR::DS, ds(&position));
        put(tags::PIXEL_SPACING, VR::DS, ds(&[dj, di]));
        put(tags::SLICE_THICKNESS, VR::DS, ds(&[thickness]));
        put(tags::SAMPLES_PER_PIXEL, VR::US, PrimitiveValue::from(1u16));
        put(
            tags::PHOTOMETRIC_INTERPRETATION,
            VR::CS,
            "MONOCHROME2".into(),
        );
        put(tags::ROWS, VR::US, PrimitiveValue::from(ny as u16));
        put(tags::COLUMNS, VR::US, PrimitiveValue::from(nx as u16));
        put(tags::BITS_ALLOCATED, VR::US, PrimitiveValue::from(16u16));
        put(tags::BITS_STORED, VR::US, PrimitiveValue::from(16u16));
        put(tags::HIGH_BIT, VR::US, PrimitiveValue::from(15u16));
        put(
            tags::PIXEL_REPRESENTATION,
            VR::US,
            PrimitiveValue::from(1u16),
        );
        put(tags::RESCALE_INTERCEPT, VR::DS, ds(&[0.0]));
        put(tags::RESCALE_SLOPE, VR::DS, ds(&[1.0]));
        let slice = &values[k * nx * ny..(k + 1) * nx * ny];
        let bytes: Vec<u8> = slice.iter().flat_map(|v| v.to_le_bytes()).collect();
        put(tags::PIXEL_DATA, VR::OW, PrimitiveValue::from(bytes));
        let file = obj
            .with_meta(FileMetaTableBuilder::new().transfer_syntax(uids::EXPLICIT_VR_LITTLE_ENDIAN))
            .map_err(|e| err(e.to_string()))?;
        let mut out = Vec::new();
        file.write_all(&mut out).map_err(|e| err(e.to_string()))?;
        files.push((format!("IM{:04}", k + 1), out));
    }
    Ok(files)
}
