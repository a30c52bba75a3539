//! One DICOM file: the header fields that place its images in a series and in space, and their
//! pixels as the modality's values (RescaleSlope/Intercept applied). A file holds one image, or
//! (an enhanced multi-frame image) every slice of a series as frames, each placed by its own
//! functional groups.

use dicom_core::Tag;
use dicom_dictionary_std::tags;
use dicom_encoding::TransferSyntaxIndex;
use dicom_object::file::ReadPreamble;
use dicom_object::{DefaultDicomObject, InMemDicomObject, OpenFileOptions};
use dicom_pixeldata::PixelDecoder;
use dicom_transfer_syntax_registry::TransferSyntaxRegistry;

/// The largest image nvnet decodes from one file (rows × columns × frames): a whole enhanced
/// volume of 512 × 512 × 1024, and a bound on what a corrupt header can make it allocate.
const MAX_PIXELS: u64 = 1 << 28;

/// What nvnet reads from one file's header.
#[derive(Debug, Clone, PartialEq)]
pub struct Slice {
    /// The file (for messages, and to read its pixels later).
    pub file: usize,
    /// Which of the file's frames this image is (0 but in a multi-frame image).
    pub frame: usize,
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
    /// EchoTime (an enhanced image's frame: its EffectiveEchoTime), ms.
    pub echo_time: Option<f64>,
    /// TemporalPositionIdentifier (an enhanced image's frame: its TemporalPositionIndex).
    pub temporal_position: Option<i64>,
    /// The transfer syntax's name (its UID when unknown).
    pub transfer_syntax: String,
    /// Whether nvnet can decode the pixel data of this transfer syntax.
    pub decodable: bool,
}

/// What one file is.
pub(super) enum Parsed {
    /// Its images: one, or one per frame.
    Slices(Vec<Slice>),
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

fn text(obj: &InMemDicomObject, tag: Tag) -> String {
    obj.get(tag)
        .and_then(|e| e.to_str().ok())
        .map(|s| s.trim_end_matches(['\0', ' ']).trim().to_string())
        .unwrap_or_default()
}

fn int(obj: &InMemDicomObject, tag: Tag) -> Option<i64> {
    obj.get(tag).and_then(|e| e.to_int::<i64>().ok())
}

fn floats<const N: usize>(obj: &InMemDicomObject, tag: Tag) -> Option<[f64; N]> {
    let v = obj.get(tag)?.to_multi_float64().ok()?;
    let a: [f64; N] = v.get(..N)?.try_into().ok()?;
    a.iter().all(|x| x.is_finite()).then_some(a)
}

/// The first item of a sequence.
fn first_item(obj: &InMemDicomObject, sequence: Tag) -> Option<&InMemDicomObject> {
    obj.get(sequence)?.items()?.first()
}

/// A value from a frame's functional groups: its own (per frame), else the shared ones'.
/// (`group`: the functional group's sequence; `tag`: the attribute in its item.)
fn grouped<T>(
    frame: Option<&InMemDicomObject>,
    shared: Option<&InMemDicomObject>,
    group: Tag,
    read: impl Fn(&InMemDicomObject) -> Option<T>,
) -> Option<T> {
    [frame, shared]
        .into_iter()
        .flatten()
        .find_map(|g| first_item(g, group).and_then(&read))
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
    let slice = Slice {
        file,
        frame: 0,
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
        echo_time: obj
            .get(tags::ECHO_TIME)
            .and_then(|e| e.to_float64().ok())
            .filter(|t| t.is_finite()),
        temporal_position: int(&obj, tags::TEMPORAL_POSITION_IDENTIFIER),
        transfer_syntax,
        decodable,
    };
    if frames == 1 {
        return Ok(Parsed::Slices(vec![slice]));
    }
    Ok(Parsed::Slices(frames_of(&obj, slice)?))
}

/// The frames of an enhanced multi-frame image, each placed as its functional groups say
/// (PlanePosition, PlaneOrientation, PixelMeasures: its own, else the shared ones).
fn frames_of(obj: &InMemDicomObject, first: Slice) -> Result<Vec<Slice>, String> {
    let frames = first.frames;
    let shared = first_item(obj, tags::SHARED_FUNCTIONAL_GROUPS_SEQUENCE);
    let per_frame = obj
        .get(tags::PER_FRAME_FUNCTIONAL_GROUPS_SEQUENCE)
        .and_then(|e| e.items())
        .unwrap_or_default();
    if per_frame.len() != frames {
        return Err(format!(
            "{frames} frames, and {} per-frame functional groups to place them \
             (PerFrameFunctionalGroupsSequence): not an enhanced image nvnet can read; convert \
             the series with dcm2niix",
            per_frame.len()
        ));
    }
    per_frame
        .iter()
        .enumerate()
        .map(|(f, groups)| {
            let g = Some(groups);
            let position = grouped(g, shared, tags::PLANE_POSITION_SEQUENCE, |i| {
                floats(i, tags::IMAGE_POSITION_PATIENT)
            })
            .ok_or_else(|| format!("frame {} has no ImagePositionPatient", f + 1))?;
            let orientation = grouped(g, shared, tags::PLANE_ORIENTATION_SEQUENCE, |i| {
                floats(i, tags::IMAGE_ORIENTATION_PATIENT)
            })
            .or(first.orientation);
            let pixel_spacing = grouped(g, shared, tags::PIXEL_MEASURES_SEQUENCE, |i| {
                floats(i, tags::PIXEL_SPACING)
            })
            .or(first.pixel_spacing);
            let slice_thickness = grouped(g, shared, tags::PIXEL_MEASURES_SEQUENCE, |i| {
                i.get(tags::SLICE_THICKNESS)?.to_float64().ok()
            })
            .or(first.slice_thickness);
            let echo_time = grouped(g, shared, tags::MR_ECHO_SEQUENCE, |i| {
                i.get(tags::EFFECTIVE_ECHO_TIME)?.to_float64().ok()
            })
            .filter(|t| t.is_finite())
            .or(first.echo_time);
            let temporal_position = first_item(groups, tags::FRAME_CONTENT_SEQUENCE)
                .and_then(|i| int(i, tags::TEMPORAL_POSITION_INDEX))
                .or(first.temporal_position);
            Ok(Slice {
                frame: f,
                position: Some(position),
                orientation,
                pixel_spacing,
                slice_thickness,
                echo_time,
                temporal_position,
                ..first.clone()
            })
        })
        .collect()
}

fn positive(v: i64, what: &str) -> Result<usize, String> {
    if v > 0 {
        Ok(v as usize)
    } else {
        Err(format!("{what} is {v}"))
    }
}

/// The pixels of `frames` of a one-sample image as the modality's values (each frame's own
/// rescale), row by row: the file decoded once, whatever the number of frames.
pub(super) fn read_frames(
    bytes: &[u8],
    rows: usize,
    columns: usize,
    frames: &[usize],
) -> Result<Vec<Vec<f32>>, String> {
    let obj = open(bytes, None)?;
    let decoded = obj.decode_pixel_data().map_err(|e| error_chain(&e))?;
    if decoded.rows() as usize != rows || decoded.columns() as usize != columns {
        return Err(format!(
            "the pixel data is {} × {}, the header says {rows} × {columns}",
            decoded.rows(),
            decoded.columns()
        ));
    }
    frames
        .iter()
        .map(|&f| {
            if f >= decoded.number_of_frames() as usize {
                return Err(format!(
                    "frame {} asked for, {} in the pixel data",
                    f + 1,
                    decoded.number_of_frames()
                ));
            }
            let values: Vec<f32> = decoded
                .to_vec_frame(f as u32)
                .map_err(|e| error_chain(&e))?;
            if values.len() != rows * columns {
                return Err(format!(
                    "{} pixel values in frame {} where {rows} × {columns} were expected",
                    values.len(),
                    f + 1
                ));
            }
            Ok(values)
        })
        .collect()
}
