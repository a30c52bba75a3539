//! PyTorch checkpoints (`torch.save`), read without PyTorch and without executing anything: the
//! zip format of PyTorch ≥ 1.6 (a pickle `data.pkl` naming storages kept as members
//! `data/<key>`), and the legacy format before it (pickles, then the storages one after the
//! other). What comes out is each tensor of the state dict, by its dotted name. The same code
//! runs natively and in the web page.
//!
//! Bounded for hostile files: inflated members within a limit, a pickle read in time and memory
//! proportional to its bytes ([`pickle`]), and a tensor never larger than the storage it reads.

mod archive;
pub mod pickle;

use std::collections::{HashMap, HashSet};

use burn::tensor::TensorData;

use pickle::{Id, Pickle, Value};

/// The first pickle of a legacy checkpoint: this number.
const LEGACY_MAGIC: [u8; 10] = [0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
/// How deep state dicts may nest inside the checkpoint (`{"state_dict": {...}}` is two).
const MAX_DICT_DEPTH: usize = 16;

/// The tensors of a checkpoint, by dotted name (`{"state_dict": {"a": t}}` gives
/// `state_dict.a`), in the pickle's order: floating-point ones as float32, integer ones as
/// int64. The error says what is wrong, without the file's name.
pub fn read(bytes: &[u8], max_inflated: u64) -> Result<Vec<(String, TensorData)>, String> {
    if bytes.starts_with(b"PK\x03\x04") {
        read_zip(bytes, max_inflated)
    } else if bytes.get(257..262) == Some(&b"ustar"[..]) {
        Err(
            "a tar archive (PyTorch's format before 1.0), which nvnet does not read; load it \
             in PyTorch and save it again with torch.save"
                .into(),
        )
    } else {
        read_legacy(bytes)
    }
}

fn read_zip(bytes: &[u8], max_inflated: u64) -> Result<Vec<(String, TensorData)>, String> {
    let members: HashMap<String, Vec<u8>> =
        archive::members(bytes, max_inflated)?.into_iter().collect();
    // One folder holds everything (its name is the file's stem when it was saved).
    let (pkl, data) = members
        .iter()
        .find(|(name, _)| name.as_str() == "data.pkl" || name.ends_with("/data.pkl"))
        .ok_or("a zip archive without data.pkl: not a torch.save checkpoint")?;
    let folder = &pkl[..pkl.len() - "data.pkl".len()];
    if members
        .get(&format!("{folder}byteorder"))
        .is_some_and(|b| b.as_slice() != b"little")
    {
        return Err("its tensors are stored big-endian, which nvnet does not read".into());
    }
    let pickle = pickle::parse(data, 0).map_err(|e| format!("{pkl}: {e}"))?;
    tensors(&pickle, |key| {
        let name = format!("{folder}data/{key}");
        members
            .get(&name)
            .map(|b| (name, b.as_slice()))
            .ok_or_else(|| {
                format!("{pkl} names a storage {key}, but there is no member {folder}data/{key}")
            })
    })
}

/// The legacy format: pickles of the magic number, the protocol version and system facts, the
/// object, the storages' keys; then each storage as an 8-byte count of its values and its bytes.
fn read_legacy(bytes: &[u8]) -> Result<Vec<(String, TensorData)>, String> {
    let not_torch = "neither a zip archive nor a pickle starting with PyTorch's magic number: \
                     not a torch.save checkpoint";
    let magic = pickle::parse(bytes, 0).map_err(|_| not_torch.to_string())?;
    if magic.get(magic.root) != &Value::BigInt(LEGACY_MAGIC.to_vec()) {
        return Err(not_torch.into());
    }
    let mut at = magic.end;
    let mut next = |what: &str| -> Result<Pickle, String> {
        let p = pickle::parse(bytes, at).map_err(|e| format!("{what}: {e}"))?;
        at = p.end;
        Ok(p)
    };
    next("the protocol version")?;
    next("the system facts")?;
    let object = next("the checkpoint's object")?;
    let keys = next("the storages' keys")?;
    let sizes = storage_sizes(&object);
    let mut storages: HashMap<String, (String, &[u8])> = HashMap::new();
    for &key in keys
        .items(keys.root)
        .ok_or("the storages' keys are not a list")?
    {
        let key = keys.str(key).ok_or("a storage key that is not a string")?;
        let count = bytes
            .get(at..at + 8)
            .ok_or_else(|| format!("the file ends before storage {key}"))?;
        let count = u64::from_le_bytes(count.try_into().expect("8 bytes"));
        // The element size is the tensor's: the count is checked against it when it is read.
        let size = *sizes
            .get(key)
            .ok_or_else(|| format!("storage {key} is not used by any tensor"))?;
        let end = count
            .checked_mul(size as u64)
            .and_then(|n| n.checked_add(at as u64 + 8))
            .filter(|&end| end <= bytes.len() as u64)
            .ok_or_else(|| format!("storage {key} says {count} values, past the file's end"))?;
        storages.insert(
            key.to_string(),
            (format!("storage {key}"), &bytes[at + 8..end as usize]),
        );
        at = end as usize;
    }
    tensors(&object, |key| {
        storages
            .get(key)
            .map(|(name, b)| (name.clone(), *b))
            .ok_or_else(|| format!("a tensor names storage {key}, which the file does not hold"))
    })
}

/// The element size of each storage the pickle names, by key (the first persistent id naming a
/// key says it), in one pass over the objects.
fn storage_sizes(p: &Pickle) -> HashMap<String, usize> {
    let mut sizes = HashMap::new();
    for v in &p.objects {
        if let Value::Persistent(id) = v
            && let Ok(s) = Storage::of(p, *id)
        {
            sizes.entry(s.key).or_insert(s.dtype.size());
        }
    }
    sizes
}

/// The tensors reachable from the pickle's root through dicts, each read from the storage
/// `storage(key)` gives (its name for messages, and its bytes).
fn tensors<'a>(
    p: &Pickle,
    storage: impl Fn(&str) -> Result<(String, &'a [u8]), String>,
) -> Result<Vec<(String, TensorData)>, String> {
    let mut out = Vec::new();
    let mut seen = HashSet::new();
    let mut todo = vec![(String::new(), p.root, 0usize)];
    while let Some((prefix, id, depth)) = todo.pop() {
        let Value::Dict(items) = p.get(id) else {
            continue;
        };
        if depth > MAX_DICT_DEPTH {
            return Err(format!(
                "its dicts nest more than {MAX_DICT_DEPTH} deep: not a state dict"
            ));
        }
        // A dict reached twice (shared through the pickle's memo) is read once.
        if !seen.insert(id) {
            continue;
        }
        // In reverse, so that the stack pops them in the pickle's order.
        for &(k, v) in items.iter().rev() {
            let key = match p.get(k) {
                Value::Str(s) => s.clone(),
                Value::Int(i) => i.to_string(),
                _ => continue,
            };
            let name = if prefix.is_empty() {
                key
            } else {
                format!("{prefix}.{key}")
            };
            match p.get(v) {
                Value::Dict(_) => todo.push((name, v, depth + 1)),
                Value::Call { .. } => {
                    if let Some(t) = tensor(p, v, &name, &storage)? {
                        out.push((name, t));
                    }
                }
                _ => {}
            }
        }
    }
    if out.is_empty() {
        return Err(format!(
            "it holds no tensors (its object is {}, not a state dict of tensors); a whole \
             model saved with torch.save(model) is read by PyTorch only: save \
             model.state_dict() instead",
            describe(p, p.root)
        ));
    }
    Ok(out)
}

fn describe(p: &Pickle, id: Id) -> String {
    let items = |n: usize| format!("{n} item{}", if n == 1 { "" } else { "s" });
    match p.get(id) {
        Value::Dict(v) => format!("a dict of {}", items(v.len())),
        Value::List(v) => format!("a list of {}", items(v.len())),
        Value::Call { .. } => match p.call(id) {
            Some((name, _)) => format!("a {name}"),
            None => "an object".into(),
        },
        Value::Tuple(_) => "a tuple".into(),
        _ => "a single value".into(),
    }
}

/// The tensor a call rebuilds (`torch._utils._rebuild_tensor_v2`, or a parameter around one);
/// `None` for a call of anything else.
fn tensor<'a>(
    p: &Pickle,
    id: Id,
    name: &str,
    storage: &impl Fn(&str) -> Result<(String, &'a [u8]), String>,
) -> Result<Option<TensorData>, String> {
    let Some((callable, args)) = p.call(id) else {
        return Ok(None);
    };
    let bad = |why: String| format!("{name}: {why}");
    match callable.as_str() {
        "torch._utils._rebuild_parameter" | "torch._utils._rebuild_parameter_with_state" => {
            let &data = args
                .first()
                .ok_or_else(|| bad("a parameter without its tensor".into()))?;
            tensor(p, data, name, storage)
        }
        "torch._utils._rebuild_tensor_v2" | "torch._utils._rebuild_tensor" => {
            let [storage_id, offset, size, stride, ..] = args else {
                return Err(bad(format!("{callable} with {} arguments", args.len())));
            };
            let Value::Persistent(pid) = p.get(*storage_id) else {
                return Err(bad("a tensor whose storage is not a persistent id".into()));
            };
            let s = Storage::of(p, *pid).map_err(bad)?;
            let ints = |id: Id, what: &str| -> Result<Vec<i64>, String> {
                p.items(id)
                    .ok_or_else(|| bad(format!("its {what} is not a tuple")))?
                    .iter()
                    .map(|&i| {
                        p.int(i)
                            .ok_or_else(|| bad(format!("its {what} holds a non-integer")))
                    })
                    .collect()
            };
            let shape = ints(*size, "size")?;
            let stride = ints(*stride, "stride")?;
            let offset = p
                .int(*offset)
                .ok_or_else(|| bad("its offset is not an integer".into()))?;
            let (member, bytes) = storage(&s.key).map_err(bad)?;
            let values = s
                .numel
                .checked_mul(s.dtype.size() as u64)
                .filter(|&n| n <= bytes.len() as u64)
                .ok_or_else(|| {
                    bad(format!(
                        "its storage says {} values of {} bytes, {member} holds {} bytes",
                        s.numel,
                        s.dtype.size(),
                        bytes.len()
                    ))
                })?;
            let layout = Layout::new(&shape, &stride, offset, s.numel).map_err(bad)?;
            let bytes = &bytes[..values as usize];
            Ok(Some(s.dtype.gather(bytes, &layout)))
        }
        _ => Ok(None),
    }
}

/// A storage as `torch.save` names it: `('storage', torch.FloatStorage, key, location, numel)`.
struct Storage {
    dtype: Dtype,
    key: String,
    numel: u64,
}

impl Storage {
    fn of(p: &Pickle, pid: Id) -> Result<Self, String> {
        let items = p.items(pid).ok_or("a persistent id that is not a tuple")?;
        let [kind, class, key, _location, numel, ..] = items else {
            return Err(format!("a storage id of {} items", items.len()));
        };
        if p.str(*kind) != Some("storage") {
            return Err("a persistent id that is not a storage".into());
        }
        let Value::Global(_, class) = p.get(*class) else {
            return Err("a storage without its type".into());
        };
        let dtype = Dtype::of(class).ok_or_else(|| format!("a storage of type {class}"))?;
        let key = p.str(*key).ok_or("a storage key that is not a string")?;
        let numel = p
            .int(*numel)
            .and_then(|n| u64::try_from(n).ok())
            .ok_or("a storage size that is not a count")?;
        Ok(Storage {
            dtype,
            key: key.to_string(),
            numel,
        })
    }
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Dtype {
    F32,
    F16,
    BF16,
    F64,
    I64,
    I32,
    I16,
    I8,
    U8,
    Bool,
}

impl Dtype {
    fn of(class: &str) -> Option<Self> {
        Some(match class {
            "FloatStorage" => Self::F32,
            "HalfStorage" => Self::F16,
            "BFloat16Storage" => Self::BF16,
            "DoubleStorage" => Self::F64,
            "LongStorage" => Self::I64,
            "IntStorage" => Self::I32,
            "ShortStorage" => Self::I16,
            "CharStorage" => Self::I8,
            "ByteStorage" => Self::U8,
            "BoolStorage" => Self::Bool,
            _ => return None,
        })
    }

    fn size(self) -> usize {
        match self {
            Self::F64 | Self::I64 => 8,
            Self::F32 | Self::I32 => 4,
            Self::F16 | Self::BF16 | Self::I16 => 2,
            Self::I8 | Self::U8 | Self::Bool => 1,
        }
    }

    /// Element `i` of little-endian `bytes`, as f64 (exact for every type but int64 beyond
    /// 2^53, which a state dict holds only as counters).
    fn value(self, bytes: &[u8], i: usize) -> f64 {
        let at = |n: usize| &bytes[i * n..i * n + n];
        match self {
            Self::F32 => f32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            Self::F16 => half::f16::from_le_bytes(at(2).try_into().unwrap()).to_f64(),
            Self::BF16 => half::bf16::from_le_bytes(at(2).try_into().unwrap()).to_f64(),
            Self::F64 => f64::from_le_bytes(at(8).try_into().unwrap()),
            Self::I64 => i64::from_le_bytes(at(8).try_into().unwrap()) as f64,
            Self::I32 => i32::from_le_bytes(at(4).try_into().unwrap()) as f64,
            Self::I16 => i16::from_le_bytes(at(2).try_into().unwrap()) as f64,
            Self::I8 => at(1)[0] as i8 as f64,
            Self::U8 | Self::Bool => at(1)[0] as f64,
        }
    }

    /// The tensor's values in row-major order: float32, or int64 for integer types.
    fn gather(self, bytes: &[u8], layout: &Layout) -> TensorData {
        let indices = layout.indices();
        match self {
            Self::F32 | Self::F16 | Self::BF16 | Self::F64 => TensorData::new(
                indices
                    .map(|i| self.value(bytes, i) as f32)
                    .collect::<Vec<f32>>(),
                layout.shape.clone(),
            ),
            _ => TensorData::new(
                indices
                    .map(|i| self.value(bytes, i) as i64)
                    .collect::<Vec<i64>>(),
                layout.shape.clone(),
            ),
        }
    }
}

/// Where a tensor's values lie in its storage: shape, strides and offset, checked to stay
/// inside the storage.
struct Layout {
    shape: Vec<usize>,
    stride: Vec<usize>,
    offset: usize,
}

impl Layout {
    fn new(shape: &[i64], stride: &[i64], offset: i64, numel: u64) -> Result<Self, String> {
        let count = |v: &[i64]| -> Option<Vec<usize>> {
            v.iter().map(|&x| usize::try_from(x).ok()).collect()
        };
        let (Some(shape_u), Some(stride_u), Ok(offset_u)) =
            (count(shape), count(stride), usize::try_from(offset))
        else {
            return Err(format!(
                "a negative size, stride or offset ({shape:?}, {stride:?}, {offset})"
            ));
        };
        // Never more values than the storage holds (a zero stride could make a few bytes
        // describe a huge tensor), and every index inside it.
        let values = shape_u
            .iter()
            .try_fold(1u64, |n, &d| n.checked_mul(d as u64));
        if values.is_none_or(|n| n > numel) {
            return Err(format!(
                "its shape {shape:?} holds more values than its storage ({numel})"
            ));
        }
        if shape.len() != stride.len() {
            return Err(format!(
                "its size {shape:?} and stride {stride:?} differ in length"
            ));
        }
        if values != Some(0) {
            let last = shape_u
                .iter()
                .zip(&stride_u)
                .try_fold(offset_u as u64, |end, (&d, &s)| {
                    end.checked_add((d as u64 - 1).checked_mul(s as u64)?)
                });
            if last.is_none_or(|l| l >= numel) {
                return Err(format!(
                    "its size {shape:?}, stride {stride:?} and offset {offset} reach past its \
                     storage ({numel} values)"
                ));
            }
        }
        Ok(Layout {
            shape: shape_u,
            stride: stride_u,
            offset: offset_u,
        })
    }

    /// The storage index of each value, in row-major order.
    fn indices(&self) -> impl Iterator<Item = usize> + '_ {
        let n: usize = self.shape.iter().product();
        let mut at = vec![0usize; self.shape.len()];
        (0..n).map(move |k| {
            if k > 0 {
                // The odometer: the last axis moves fastest.
                for axis in (0..at.len()).rev() {
                    at[axis] += 1;
                    if at[axis] < self.shape[axis] {
                        break;
                    }
                    at[axis] = 0;
                }
            }
            self.offset
                + at.iter()
                    .zip(&self.stride)
                    .map(|(i, s)| i * s)
                    .sum::<usize>()
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Relative to the package's folder, where test binaries run.
    const CHECKPOINT: &str = "../testdata/reference/segresnet_f8/model.pt";

    /// MONAI's SegResNet as `torch.save` wrote it (testdata/reference/make.py) against the same
    /// state dict written by the `safetensors` library: every tensor, by name, bit for bit.
    #[test]
    fn monais_checkpoint_reads_as_its_safetensors_copy() {
        let pt = std::fs::read(CHECKPOINT).unwrap();
        let st = std::fs::read("../testdata/reference/segresnet_f8/model.safetensors").unwrap();
        let st = safetensors::SafeTensors::deserialize(&st).unwrap();
        let tensors = read(&pt, 1 << 30).unwrap();
        assert_eq!(tensors.len(), st.len());
        for (name, data) in &tensors {
            let view = st.tensor(name).unwrap();
            assert_eq!(view.dtype(), safetensors::Dtype::F32, "{name}");
            assert_eq!(data.shape.to_vec(), view.shape(), "{name}");
            assert_eq!(data.as_bytes(), view.data(), "{name}");
        }
    }

    /// The legacy format (before PyTorch 1.6) of the same state dict, laid out as
    /// `torch.serialization._legacy_save` writes it: pickles of the magic number, the protocol
    /// version and the system facts, the object (here the zip's own pickle, whose storage ids
    /// the legacy ones extend by a view field), the sorted storage keys; then each storage as an
    /// 8-byte count and its bytes. It reads as the zip does.
    #[test]
    fn the_legacy_format_reads_as_the_zip_format() {
        let pt = std::fs::read(CHECKPOINT).unwrap();
        let members: HashMap<String, Vec<u8>> = archive::members(&pt, 1 << 30)
            .unwrap()
            .into_iter()
            .collect();
        let object = &members["model/data.pkl"];
        let mut keys: Vec<&str> = members
            .keys()
            .filter_map(|k| k.strip_prefix("model/data/"))
            .collect();
        keys.sort();
        let mut legacy = b"\x80\x02\x8a\x0a".to_vec();
        legacy.extend(LEGACY_MAGIC);
        legacy.extend(b".\x80\x02M\xe9\x03.");
        legacy.extend(b"\x80\x02}q\x00X\x0d\x00\x00\x00little_endianq\x01\x88s.");
        legacy.extend(object);
        legacy.extend(b"\x80\x02]q\x00(");
        for k in &keys {
            legacy.push(b'X');
            legacy.extend((k.len() as u32).to_le_bytes());
            legacy.extend(k.as_bytes());
        }
        legacy.extend(b"e.");
        for k in &keys {
            let data = &members[&format!("model/data/{k}")];
            legacy.extend((data.len() as u64 / 4).to_le_bytes());
            legacy.extend(data);
        }
        let (zip, old) = (read(&pt, 1 << 30).unwrap(), read(&legacy, 1 << 30).unwrap());
        assert_eq!(zip.len(), old.len());
        for ((a, x), (b, y)) in zip.iter().zip(&old) {
            assert_eq!((a, x.as_bytes()), (b, y.as_bytes()));
        }
        // Cut inside its last storage: refused by name.
        let e = read(&legacy[..legacy.len() - 1], 1 << 30).unwrap_err();
        assert!(e.contains("past the file's end"), "{e}");
    }

    #[test]
    fn a_tar_archive_and_other_files_are_refused_by_what_they_are() {
        let mut tar = vec![0u8; 600];
        tar[0] = 0x80;
        tar[257..262].copy_from_slice(b"ustar");
        assert!(read(&tar, 1 << 30).unwrap_err().contains("tar archive"));
        // A pickle, but not a checkpoint's: its first object is not the magic number.
        let e = read(b"\x80\x02K\x07.", 1 << 30).unwrap_err();
        assert!(e.contains("not a torch.save checkpoint"), "{e}");
        let e = read(b"PK\x03\x04 cut short", 1 << 30).unwrap_err();
        assert!(e.contains("broken zip archive"), "{e}");
    }

    #[test]
    fn strided_tensors_are_read_in_row_major_order() {
        // A 2×3 tensor stored transposed (stride 1, 2), from offset 1 of a storage of 7.
        let layout = Layout::new(&[2, 3], &[1, 2], 1, 7).unwrap();
        assert_eq!(layout.indices().collect::<Vec<_>>(), [1, 3, 5, 2, 4, 6]);
        let bytes: Vec<u8> = (0..7).flat_map(|v| (v as f32).to_le_bytes()).collect();
        let data = Dtype::F32.gather(&bytes, &layout);
        assert_eq!(data.shape.to_vec(), [2, 3]);
        assert_eq!(data.to_vec::<f32>().unwrap(), [1., 3., 5., 2., 4., 6.]);
        // A scalar, and an empty tensor.
        assert_eq!(
            Layout::new(&[], &[], 6, 7)
                .unwrap()
                .indices()
                .collect::<Vec<_>>(),
            [6]
        );
        assert_eq!(
            Layout::new(&[0, 4], &[4, 1], 0, 0)
                .unwrap()
                .indices()
                .count(),
            0
        );
    }

    #[test]
    fn layouts_past_their_storage_are_refused() {
        for (shape, stride, offset, words) in [
            (&[2i64, 3][..], &[3i64, 1][..], 2i64, "reach past"),
            (&[8], &[0], 0, "more values than its storage"),
            (
                &[i64::MAX, i64::MAX],
                &[1, 1],
                0,
                "more values than its storage",
            ),
            (&[2], &[-1], 0, "negative"),
            (&[2, 2], &[1], 0, "differ in length"),
        ] {
            let e = Layout::new(shape, stride, offset, 7).err().unwrap();
            assert!(e.contains(words), "{shape:?} {stride:?}: {e}");
        }
    }

    #[test]
    fn half_types_and_integers_convert() {
        let h: Vec<u8> = [1.5f32, -2.0]
            .iter()
            .flat_map(|&v| half::f16::from_f32(v).to_le_bytes())
            .collect();
        let layout = Layout::new(&[2], &[1], 0, 2).unwrap();
        assert_eq!(
            Dtype::F16.gather(&h, &layout).to_vec::<f32>().unwrap(),
            [1.5, -2.0]
        );
        let b: Vec<u8> = [3.25f32, 1e30]
            .iter()
            .flat_map(|&v| half::bf16::from_f32(v).to_le_bytes())
            .collect();
        let got = Dtype::BF16.gather(&b, &layout).to_vec::<f32>().unwrap();
        assert_eq!(got[0], 3.25);
        assert_eq!(got[1], half::bf16::from_f32(1e30).to_f32());
        let l: Vec<u8> = [7i64, -9].iter().flat_map(|v| v.to_le_bytes()).collect();
        assert_eq!(
            Dtype::I64.gather(&l, &layout).to_vec::<i64>().unwrap(),
            [7, -9]
        );
    }
}
