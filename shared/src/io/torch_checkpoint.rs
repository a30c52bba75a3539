//! Checks on a PyTorch checkpoint (`torch.save`'s zip, or a legacy pickle) before burn-store
//! reads it. burn-store trusts its input: it inflates zip members whole, and builds the pickle's
//! objects as a tree that it clones, formats and drops recursively. A hostile file could make it
//! allocate without bound or overflow the stack (a crash, not an error). These checks bound what
//! it will do, and say which file and what is wrong.

use std::io::{Cursor, Read};

/// Nesting of the pickle's objects. MONAI's state dict nests 7 deep; burn-store recurses once
/// per level when it clones or drops an object.
pub const MAX_PICKLE_DEPTH: u32 = 100;
/// Bytes burn-store may allocate or move while it builds the pickle's objects (it clones an
/// object for every memo read and write). MONAI's checkpoint needs about 1.7 MB.
pub const MAX_PICKLE_WORK: u64 = 1 << 30;
/// What one object costs in burn-store, roughly (its `Object` enum and a heap header).
const NODE: u64 = 64;

/// Check a checkpoint's bytes: zip members inflate to what they declare and to at most
/// `max_inflated` bytes in all, and the pickle burn-store reads stays within
/// [`MAX_PICKLE_DEPTH`] and [`MAX_PICKLE_WORK`]. The error says what is wrong, without the
/// file's name (the caller adds it).
pub(crate) fn check(bytes: &[u8], max_inflated: u64) -> Result<(), String> {
    if !bytes.starts_with(b"PK\x03\x04") {
        // burn-store takes a file with "ustar" at 257 for a tar archive, whatever it starts with.
        if bytes.get(257..262) == Some(&b"ustar"[..]) {
            return Err(
                "a tar archive (PyTorch's format before 1.0), which nvnet does not read; \
                 load it in PyTorch and save it again with torch.save"
                    .into(),
            );
        }
        // Legacy format: magic number, protocol, system info, the object, storage keys.
        return scan_pickles(bytes, 5);
    }
    let zip_error = |e: zip::result::ZipError| format!("a broken zip archive ({e})");
    let mut archive = zip::ZipArchive::new(Cursor::new(bytes)).map_err(zip_error)?;
    let mut declared = 0u64;
    for i in 0..archive.len() {
        declared = declared.saturating_add(archive.by_index_raw(i).map_err(zip_error)?.size());
    }
    if declared > max_inflated {
        return Err(format!(
            "its zip members hold {} MiB once inflated, more than nvnet reads from a weights \
             file ({} MiB)",
            declared >> 20,
            max_inflated >> 20
        ));
    }
    // A member may inflate past the size it declares (deflate expands up to 1032 times):
    // burn-store would read it whole.
    for i in 0..archive.len() {
        let mut member = archive.by_index(i).map_err(zip_error)?;
        let (name, size) = (member.name().to_string(), member.size());
        let mut limited = (&mut member).take(size.saturating_add(1));
        let read = std::io::copy(&mut limited, &mut std::io::sink())
            .map_err(|e| format!("zip member {name} cannot be inflated ({e})"))?;
        if read > size {
            return Err(format!(
                "zip member {name} inflates past the {size} bytes it declares"
            ));
        }
    }
    // The pickle burn-store reads: the first of these names, else the first member so named.
    let names: Vec<String> = archive.file_names().map(String::from).collect();
    let Some(name) = ["data.pkl", "archive/data.pkl"]
        .iter()
        .find(|n| names.iter().any(|m| m == *n))
        .map(|n| n.to_string())
        .or_else(|| {
            (0..archive.len())
                .filter_map(|i| Some(archive.by_index_raw(i).ok()?.name().to_string()))
                .find(|n| n.ends_with("data.pkl"))
        })
    else {
        return Ok(()); // burn-store says "No data.pkl file found".
    };
    let mut pickle = Vec::new();
    archive
        .by_name(&name)
        .map_err(zip_error)?
        .read_to_end(&mut pickle)
        .map_err(|e| format!("zip member {name} cannot be inflated ({e})"))?;
    scan_pickles(&pickle, 1).map_err(|why| format!("{name}: {why}"))
}

/// Scan up to `count` pickles one after the other from the start of `bytes`.
fn scan_pickles(bytes: &[u8], count: usize) -> Result<(), String> {
    let mut at = 0;
    for _ in 0..count {
        match scan_pickle(bytes, at)? {
            Some(scan) if scan.end < bytes.len() => at = scan.end,
            _ => break,
        }
    }
    Ok(())
}

/// One object of burn-store's pickle stack, as far as cost goes.
#[derive(Clone, Copy)]
struct Obj {
    depth: u32,
    bytes: u64,
    /// burn-store's MARK is an ordinary object (a class named mark.mark) that it searches for.
    mark: bool,
}

impl Obj {
    fn leaf(extra: u64) -> Self {
        Obj {
            depth: 1,
            bytes: NODE + extra,
            mark: false,
        }
    }
    fn holding(children: &[Obj]) -> Self {
        Obj {
            depth: 1 + children.iter().map(|c| c.depth).max().unwrap_or(0),
            bytes: NODE + children.iter().map(|c| c.bytes).sum::<u64>(),
            mark: false,
        }
    }
    fn absorb(&mut self, children: &[Obj]) {
        for c in children {
            self.depth = self.depth.max(c.depth + 1);
            self.bytes += c.bytes;
        }
    }
}

/// A pickle that was followed to its end.
#[derive(Debug, PartialEq)]
struct Scan {
    /// Where it ends (after its STOP).
    end: usize,
    /// Its deepest nesting.
    depth: u32,
    /// The bytes burn-store allocates or copies reading it, roughly.
    work: u64,
}

/// Follow one pickle from `at` the way burn-store's reader does (the opcodes it knows, with its
/// cloning), tracking each object's nesting depth and size. `Ok(Some(scan))`: the pickle ends
/// at `scan.end`. `Ok(None)`: it stops where burn-store stops with an error of its own (an unknown
/// opcode, a truncated file, an empty stack). `Err`: a limit is passed, at the point burn-store
/// would pass it.
fn scan_pickle(bytes: &[u8], at: usize) -> Result<Option<Scan>, String> {
    let mut r = Reader { bytes, at };
    let mut stack: Vec<Obj> = Vec::new();
    let mut memo: std::collections::HashMap<u32, Obj> = std::collections::HashMap::new();
    let mut work = 0u64;
    let mut deepest = 0;
    // Every step checks the limits: burn-store drops whatever it has built when it stops.
    let over = |depth: u32, work: u64| -> Result<(), String> {
        if depth > MAX_PICKLE_DEPTH {
            Err(format!(
                "its pickle nests objects more than {MAX_PICKLE_DEPTH} deep (a hostile file?)"
            ))
        } else if work > MAX_PICKLE_WORK {
            Err(format!(
                "its pickle builds more than {} MiB of objects (a hostile file?)",
                MAX_PICKLE_WORK >> 20
            ))
        } else {
            Ok(())
        }
    };
    let leaf = |extra: usize| {
        let o = Obj::leaf(extra as u64);
        Some((o, o.bytes))
    };
    macro_rules! get {
        ($e:expr) => {
            match $e {
                Some(v) => v,
                None => return Ok(None),
            }
        };
    }
    let pop_to_mark = |stack: &mut Vec<Obj>| -> Option<Vec<Obj>> {
        let mark = stack.iter().rposition(|o| o.mark)?;
        let items = stack.split_off(mark + 1);
        stack.pop();
        Some(items)
    };
    loop {
        let op = get!(r.u8());
        // What the opcode pushes, and the bytes burn-store allocates or copies for it.
        let pushed: Option<(Obj, u64)> = match op {
            0x80 => {
                if get!(r.u8()) > 5 {
                    return Ok(None);
                }
                None
            }
            // GLOBAL: module and name, one line each.
            b'c' => {
                let module = get!(r.line());
                let name = get!(r.line());
                let mut o = Obj::leaf((module.len() + name.len()) as u64);
                o.mark = module == b"mark" && name == b"mark";
                Some((o, o.bytes))
            }
            b'J' => leaf(get!(r.take(4)).len()),
            b'K' => leaf(get!(r.take(1)).len()),
            b'M' => leaf(get!(r.take(2)).len()),
            b'G' => leaf(get!(r.take(8)).len()),
            b'I' => leaf(get!(r.line()).len()),
            // LONG1, SHORT_BINSTRING: a one-byte length; BINUNICODE: four bytes.
            0x8a | b'U' => {
                let n = get!(r.u8()) as usize;
                leaf(get!(r.take(n)).len())
            }
            b'X' => {
                let n = get!(r.u32()) as usize;
                leaf(get!(r.take(n)).len())
            }
            b'N' | 0x88 | 0x89 | b')' | b']' | b'}' => leaf(0),
            // TUPLE, LIST, DICT: from the mark (DICT clones its items).
            b't' | b'l' | b'd' => {
                let items = get!(pop_to_mark(&mut stack));
                if op == b'd' {
                    if items.len() % 2 != 0 {
                        return Ok(None);
                    }
                    work += items.iter().map(|o| o.bytes).sum::<u64>();
                }
                Some((Obj::holding(&items), NODE))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                if stack.len() < n {
                    return Ok(None);
                }
                let items = stack.split_off(stack.len() - n);
                Some((Obj::holding(&items), NODE))
            }
            // APPEND, SETITEM: into the object below.
            b'a' | b's' => {
                let n = if op == b'a' { 1 } else { 2 };
                if stack.len() < n + 1 {
                    return Ok(None);
                }
                let items = stack.split_off(stack.len() - n);
                let top = stack.last_mut().expect("checked above");
                top.absorb(&items);
                deepest = deepest.max(top.depth);
                over(top.depth, work)?;
                None
            }
            // APPENDS, SETITEMS: from the mark, into the object below it. burn-store takes
            // SETITEMS' items from the front of a vector, moving the rest each time.
            b'e' | b'u' => {
                let items = get!(pop_to_mark(&mut stack));
                if op == b'u' {
                    if items.len() % 2 != 0 {
                        return Ok(None);
                    }
                    let n = items.len() as u64;
                    work = work.saturating_add(n.saturating_mul(n) / 2 * NODE);
                }
                let top = get!(stack.last_mut());
                top.absorb(&items);
                deepest = deepest.max(top.depth);
                over(top.depth, work)?;
                None
            }
            // BINPUT, LONG_BINPUT, MEMOIZE: a clone of the top into the memo.
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => get!(r.u8()) as u32,
                    b'r' => get!(r.u32()),
                    _ => memo.len() as u32,
                };
                let top = *get!(stack.last());
                work += top.bytes;
                memo.insert(index, top);
                None
            }
            // BINGET, LONG_BINGET: a clone from the memo.
            b'h' | b'j' => {
                let index = if op == b'h' {
                    get!(r.u8()) as u32
                } else {
                    get!(r.u32())
                };
                let o = *get!(memo.get(&index));
                Some((o, o.bytes))
            }
            b'(' => Some((
                Obj {
                    mark: true,
                    ..Obj::leaf(0)
                },
                NODE,
            )),
            // BINPERSID: the id becomes the persistent object.
            b'Q' => {
                let pid = get!(stack.pop());
                Some((Obj { mark: false, ..pid }, NODE))
            }
            // REDUCE: burn-store clones callable and arguments (twice over for some
            // callables) and may wrap them two levels deep.
            b'R' => {
                let args = get!(stack.pop());
                let callable = get!(stack.pop());
                work += 3 * (args.bytes + callable.bytes);
                let mut o = Obj::holding(&[args, callable]);
                o.depth += 1;
                Some((o, NODE))
            }
            // BUILD, NEWOBJ.
            b'b' | 0x81 => {
                let args = get!(stack.pop());
                let obj = get!(stack.pop());
                Some((Obj::holding(&[obj, args]), NODE))
            }
            b'.' => {
                get!(stack.pop());
                return Ok(Some(Scan {
                    end: r.at,
                    depth: deepest,
                    work,
                }));
            }
            _ => return Ok(None),
        };
        if let Some((o, allocated)) = pushed {
            work += allocated;
            deepest = deepest.max(o.depth);
            over(o.depth, work)?;
            stack.push(o);
        }
    }
}

/// A cursor over the pickle's bytes; `None` past the end (burn-store's "unexpected end").
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
    fn u32(&mut self) -> Option<u32> {
        Some(u32::from_le_bytes(self.take(4)?.try_into().ok()?))
    }
    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let out = self.bytes.get(self.at..self.at.checked_add(n)?)?;
        self.at += n;
        Some(out)
    }
    fn line(&mut self) -> Option<&'a [u8]> {
        let rest = self.bytes.get(self.at..)?;
        let n = rest.iter().position(|&b| b == b'\n')?;
        self.at += n + 1;
        Some(&rest[..n])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn nested_lists(depth: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2];
        p.extend(std::iter::repeat_n(b'(', depth));
        p.extend(std::iter::repeat_n(b'l', depth));
        p.push(b'.');
        p
    }

    /// x = [x, x], again and again through the memo: 2^n objects from 6·n bytes.
    fn doubling_lists(times: usize) -> Vec<u8> {
        let mut p = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..times {
            p.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
        }
        p.push(b'.');
        p
    }

    #[test]
    fn deep_nesting_is_refused_and_shallow_nesting_passes() {
        let scan = scan_pickle(&nested_lists(50), 0).unwrap().unwrap();
        assert_eq!((scan.end, scan.depth), (103, 50));
        let e = scan_pickle(&nested_lists(100_000), 0).unwrap_err();
        assert!(e.contains("more than 100 deep"), "{e}");
    }

    /// MONAI's checkpoint (F=8; larger F have the same tensors) is far within the limits.
    #[test]
    fn the_reference_checkpoint_is_far_within_the_limits() {
        // Relative to the package's folder, where test binaries run (see tests/common.rs).
        let path = "../testdata/reference/segresnet_f8/model.pt";
        let bytes = std::fs::read(path).unwrap();
        check(&bytes, 1 << 30).unwrap();
        let mut archive = zip::ZipArchive::new(Cursor::new(&bytes[..])).unwrap();
        let mut pickle = Vec::new();
        archive
            .by_name("model/data.pkl")
            .unwrap()
            .read_to_end(&mut pickle)
            .unwrap();
        let scan = scan_pickle(&pickle, 0).unwrap().unwrap();
        eprintln!("{scan:?}");
        assert_eq!(scan.end, pickle.len());
        assert!(
            scan.depth <= 10 && scan.work < MAX_PICKLE_WORK / 100,
            "{scan:?}"
        );
    }

    #[test]
    fn memo_doubling_is_refused() {
        assert!(scan_pickle(&doubling_lists(10), 0).unwrap().is_some());
        let e = scan_pickle(&doubling_lists(40), 0).unwrap_err();
        assert!(e.contains("MiB of objects"), "{e}");
    }

    #[test]
    fn a_mark_named_as_a_global_counts_as_a_mark() {
        // burn-store searches for a class mark.mark, however it got on the stack.
        let mut p = vec![0x80, 2];
        for _ in 0..200 {
            p.extend(b"cmark\nmark\n");
        }
        p.extend(std::iter::repeat_n(b'l', 200));
        p.push(b'.');
        assert!(scan_pickle(&p, 0).unwrap_err().contains("deep"));
    }

    #[test]
    fn what_burn_store_refuses_itself_stops_the_scan() {
        for p in [
            &b"\x80\x02(l"[..],
            b"\x80\x02P",
            b"\x80\x09N.",
            b"\x80\x02h\x05.",
            b"\x80\x02X\xff\xff\xff\xffab",
        ] {
            assert_eq!(scan_pickle(p, 0), Ok(None), "{p:?}");
        }
    }

    #[test]
    fn a_tar_archive_is_refused() {
        let mut t = vec![0u8; 600];
        t[0] = 0x80;
        t[257..262].copy_from_slice(b"ustar");
        assert!(check(&t, 1 << 30).unwrap_err().contains("tar archive"));
    }
}
