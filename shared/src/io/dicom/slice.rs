//! One DICOM file: the header fields that place its image in a series and in space, and its
//! pixels as the modality's values (RescaleSlope/Intercept applied).

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// The largest image nvnet decodes from one file (rows × columns × frames): far above any MR
/// slice, and a bound on what a corrupt header can make it allocate.
const MAX_PIXELS: u64 = 1 << 26;

/// What nvnet reads from one file's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The file (for messages, and to read its pixels later).
    pub file: usize,
    pub series_uid: String,
    pub series_number: Option<i64>,
    pub series_description: String,
    pub protocol_name: String,
    pub patient_id: String,
    /// DICOM's Modality (MR, CT, ...), not an MRI contrast.
    pub modality: String,
    /// ImageType's values (ORIGINAL/DERIVED, PRIMARY, LOCALIZER, ...), upper case.
    pub image_type: Vec<String>,
    /// ContrastBolusAgent is present and not empty.
    pub contrast_agent: bool,
    pub instance_number: Option<i64>,
    pub rows: usize,
    pub columns: usize,
    pub frames: usize,
    pub samples_per_pixel: usize,
    /// PixelSpacing: (between rows, between columns), mm.
    pub pixel_spacing: Option<[f64; 2]>,
    /// ImageOrientationPatient: the row and the column direction (LPS).
    pub orientation: Option<[f64; 6]>,
    /// ImagePositionPatient: the centre of the first voxel (LPS, mm).
    pub position: Option<[f64; 3]>,
    pub slice_thickness: Option<f64>,
    pub echo_number: Option<i64>,
    /// The transfer syntax's name (its UID when unknown).
    pub transfer_syntax: String,
    /// Whether nvnet can decode the pixel data of this transfer syntax.
    pub decodable: bool,
}

/// What one file is.
pub(super) enum Parsed {
    Slice(Box<Slice>),
    /// A DICOM file without an image (DICOMDIR, a report, a presentation state): the reason.
    NotImage(String),
}

/// Open a Part 10 file from its bytes (the 128-byte preamble, "DICM", the meta group, the data
/// set), up to `until` (exclusive) or whole.
fn open(bytes: &[u8], until: Option<Tag>) -> Result<DefaultDicomObject, String> {
    let body = match bytes.get(128..132) {
        Some(b"DICM") => &bytes[128..],
        _ => return Err("no 'DICM' marker at byte 128: not a DICOM file".into()),
    };
    let options = OpenFileOptions::new().read_preamble(ReadPreamble::Never);
    let options = match until {
        Some(tag) => options.read_until(tag),
        None => options,
    };
    options.from_reader(body).map_err(|e| error_chain(&e))
}

/// A dicom-rs error with its causes, which say where the file went wrong.
fn error_chain(e: &dyn std::error::Error) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

fn text(obj: &DefaultDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn int(obj: &DefaultDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn floats<const N: usize>(obj: &DefaultDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.get(..N)?.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

/// Read one file's header (its pixel data is not read).
pub(super) fn read_header(file: usize, bytes: &[u8]) -> Result<Parsed, String> {
    let obj = open(bytes, Some(tags::PIXEL_DATA))?;
    let ts_uid = obj.meta().transfer_syntax();
    let ts = TransferSyntaxRegistry.get(ts_uid);
    let transfer_syntax = ts.map_or_else(
        || ts_uid.trim_end_matches(['\0', ' ']).to_string(),
        |t| t.name().to_string(),
    );
    let decodable = ts.is_some_and(|t| t.can_decode_all());
    let rows = int(&obj, tags::ROWS);
    let columns = int(&obj, tags::COLUMNS);
    let series_uid = text(&obj, tags::SERIES_INSTANCE_UID);
    let (Some(rows), Some(columns)) = (rows, columns) else {
        let sop = text(&obj, tags::SOP_CLASS_UID);
        return Ok(Parsed::NotImage(format!(
            "no image in it (SOP class {})",
            if sop.is_empty() { "not given" } else { &sop }
        )));
    };
    if series_uid.is_empty() {
        return Err("an image without a SeriesInstanceUID".into());
    }
    let frames = int(&obj, tags::NUMBER_OF_FRAMES).unwrap_or(1);
    let (rows, columns) = (positive(rows, "Rows")?, positive(columns, "Columns")?);
    let frames = positive(frames, "NumberOfFrames")?;
    if (rows * columns * frames) as u64 > MAX_PIXELS {
        return Err(format!(
            "an image of {rows} × {columns} × {frames} pixels, more than nvnet reads ({MAX_PIXELS})"
        ));
    }
    let image_type = obj
        .get(tags::IMAGE_TYPE)
        .and_then(|e| e.to_multi_str().ok())
        .map(|v| v.iter().map(|s| s.trim().to_uppercase()).collect())
        .unwrap_or_default();
    Ok(Parsed::Slice(Box::new(Slice {
        file,
        series_uid,
        series_number: int(&obj, tags::SERIES_NUMBER),
        series_description: text(&obj, tags::SERIES_DESCRIPTION),
        protocol_name: text(&obj, tags::PROTOCOL_NAME),
        patient_id: text(&obj, tags::PATIENT_ID),
        modality: text(&obj, tags::MODALITY),
        image_type,
        contrast_agent: !text(&obj, tags::CONTRAST_BOLUS_AGENT).is_empty(),
        instance_number: int(&obj, tags::INSTANCE_NUMBER),
        rows,
        columns,
        frames,
        samples_per_pixel: int(&obj, tags::SAMPLES_PER_PIXEL).unwrap_or(1).max(0) as usize,
        pixel_spacing: floats(&obj, tags::PIXEL_SPACING),
        orientation: floats(&obj, tags::IMAGE_ORIENTATION_PATIENT),
        position: floats(&obj, tags::IMAGE_POSITION_PATIENT),
        slice_thickness: obj
            .get(tags::SLICE_THICKNESS)
            .and_then(|e| e.to_float64().ok()),
        echo_number: int(&obj, tags::ECHO_NUMBERS),
        transfer_syntax,
        decodable,
    })))
}

fn positive(v: i64, what: &str) -> Result<usize, String> {
    if v > 0 {
        Ok(v as usize)
    } else {
        Err(format!("{what} is {v}"))
    }
}

/// The pixels of a one-frame, one-sample image as the modality's values, row by row.
pub(super) fn read_pixels(bytes: &[u8], rows: usize, columns: usize) -> Result<Vec<f32>, String> {
    let obj = open(bytes, None)?;
    let decoded = obj.decode_pixel_data().map_err(|e| error_chain(&e))?;
    if decoded.rows() as usize != rows || decoded.columns() as usize != columns {
        return Err(format!(
            "the pixel data is {} × {}, the header says {rows} × {columns}",
            decoded.rows(),
            decoded.columns()
        ));
    }
    let values: Vec<f32> = decoded.to_vec_frame(0).map_err(|e| error_chain(&e))?;
    if values.len() != rows * columns {
        return Err(format!(
            "{} pixel values where {rows} × {columns} were expected",
            values.len()
        ));
    }
    Ok(values)
}
