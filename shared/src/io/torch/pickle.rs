//! The subset of Python's pickle that `torch.save` writes (protocols 2 to 5), read into a flat
//! table of objects. Nothing is executed: a class or function named by the pickle is kept as
//! its name, and a call of it as the name with its arguments, for the caller to recognise.
//!
//! A hostile pickle cannot make this recurse, clone or allocate beyond its own size: every
//! opcode adds at most one object, a memo read shares the object instead of copying it, and
//! nothing here walks the objects.

use std::collections::HashMap;

/// An object's index in [`Pickle::objects`].
pub type Id = usize;

#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer of more than 8 bytes (LONG1), as stored: little-endian two's complement.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    Bytes(Vec<u8>),
    Tuple(Vec<Id>),
    List(Vec<Id>),
    /// A dict or an `OrderedDict`, its items in order.
    Dict(Vec<(Id, Id)>),
    /// A class or a function, by module and name (GLOBAL, STACK_GLOBAL).
    Global(String, String),
    /// A call (REDUCE, NEWOBJ) of `callable` with the tuple `args`, never made.
    Call {
        callable: Id,
        args: Id,
    },
    /// A persistent id: what `torch.save` writes for a tensor's storage.
    Persistent(Id),
}

/// A pickle read to its STOP.
#[derive(Debug)]
pub struct Pickle {
    pub objects: Vec<Value>,
    /// The object the pickle builds.
    pub root: Id,
    /// Where the pickle ends in the bytes (after its STOP).
    pub end: usize,
}

impl Pickle {
    pub fn get(&self, id: Id) -> &Value {
        &self.objects[id]
    }

    /// The object if it is a string.
    pub fn str(&self, id: Id) -> Option<&str> {
        match self.get(id) {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn int(&self, id: Id) -> Option<i64> {
        match self.get(id) {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// The items of a tuple or a list.
    pub fn items(&self, id: Id) -> Option<&[Id]> {
        match self.get(id) {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }

    /// `module.name` of a call's callable, and its arguments.
    pub fn call(&self, id: Id) -> Option<(String, &[Id])> {
        let Value::Call { callable, args } = self.get(id) else {
            return None;
        };
        let Value::Global(module, name) = self.get(*callable) else {
            return None;
        };
        Some((format!("{module}.{name}"), self.items(*args)?))
    }
}

enum Slot {
    Object(Id),
    Mark,
}

/// Read the pickle that starts at `at`. The error says what is wrong and at which byte.
pub fn parse(bytes: &[u8], at: usize) -> Result<Pickle, String> {
    let mut r = Reader { bytes, at };
    let mut objects: Vec<Value> = Vec::new();
    let mut stack: Vec<Slot> = Vec::new();
    let mut memo: HashMap<u32, Id> = HashMap::new();
    loop {
        let start = r.at;
        let op = r.u8()?;
        let bad = |why: &str| format!("pickle byte {start}: {why}");
        let pushed: Option<Value> = match op {
            // PROTO, FRAME: nothing to build.
            0x80 => {
                let protocol = r.u8()?;
                if protocol > 5 {
                    return Err(bad(&format!(
                        "pickle protocol {protocol} (at most 5 is known)"
                    )));
                }
                None
            }
            0x95 => {
                r.take(8)?;
                None
            }
            b'.' => {
                let root = pop(&mut stack).map_err(bad)?;
                return Ok(Pickle {
                    objects,
                    root,
                    end: r.at,
                });
            }
            b'(' => {
                stack.push(Slot::Mark);
                None
            }
            b'N' => Some(Value::None),
            0x88 => Some(Value::Bool(true)),
            0x89 => Some(Value::Bool(false)),
            b'J' => Some(Value::Int(i32::from_le_bytes(r.array()?) as i64)),
            b'K' => Some(Value::Int(r.u8()? as i64)),
            b'M' => Some(Value::Int(u16::from_le_bytes(r.array()?) as i64)),
            // LONG1: a little-endian two's complement integer of n bytes.
            0x8a => {
                let n = r.u8()? as usize;
                let digits = r.take(n)?;
                if n > 8 {
                    Some(Value::BigInt(digits.to_vec()))
                } else {
                    let mut v = [if digits.last().is_some_and(|b| b & 0x80 != 0) {
                        0xff
                    } else {
                        0
                    }; 8];
                    v[..n].copy_from_slice(digits);
                    Some(Value::Int(i64::from_le_bytes(v)))
                }
            }
            b'G' => Some(Value::Float(f64::from_be_bytes(r.array()?))),
            // BINUNICODE, SHORT_BINUNICODE, BINUNICODE8.
            b'X' | 0x8c | 0x8d => {
                let n = match op {
                    b'X' => u32::from_le_bytes(r.array()?) as u64,
                    0x8c => r.u8()? as u64,
                    _ => u64::from_le_bytes(r.array()?),
                };
                let text = r.take(usize::try_from(n).map_err(|_| bad("a string too long"))?)?;
                let text = std::str::from_utf8(text).map_err(|_| bad("a string not in UTF-8"))?;
                Some(Value::Str(text.to_string()))
            }
            // SHORT_BINSTRING, BINSTRING (Python 2 strings), SHORT_BINBYTES, BINBYTES.
            b'U' | b'T' | b'C' | b'B' => {
                let n = if matches!(op, b'U' | b'C') {
                    r.u8()? as usize
                } else {
                    u32::from_le_bytes(r.array()?) as usize
                };
                let data = r.take(n)?;
                Some(match op {
                    b'U' | b'T' => Value::Str(String::from_utf8_lossy(data).into_owned()),
                    _ => Value::Bytes(data.to_vec()),
                })
            }
            b')' => Some(Value::Tuple(Vec::new())),
            b']' => Some(Value::List(Vec::new())),
            b'}' => Some(Value::Dict(Vec::new())),
            b't' => Some(Value::Tuple(to_mark(&mut stack).map_err(bad)?)),
            b'l' => Some(Value::List(to_mark(&mut stack).map_err(bad)?)),
            b'd' => {
                let items = to_mark(&mut stack).map_err(bad)?;
                Some(Value::Dict(pairs(&items).map_err(bad)?))
            }
            0x85..=0x87 => {
                let n = (op - 0x84) as usize;
                let mut items = Vec::with_capacity(n);
                for _ in 0..n {
                    items.push(pop(&mut stack).map_err(bad)?);
                }
                items.reverse();
                Some(Value::Tuple(items))
            }
            // APPEND, APPENDS: into the list below.
            b'a' | b'e' => {
                let items = if op == b'a' {
                    vec![pop(&mut stack).map_err(bad)?]
                } else {
                    to_mark(&mut stack).map_err(bad)?
                };
                let list = top(&stack).map_err(bad)?;
                match &mut objects[list] {
                    Value::List(v) => v.extend(items),
                    other => return Err(bad(&format!("append to {}", kind(other)))),
                }
                None
            }
            // SETITEM, SETITEMS: into the dict below.
            b's' | b'u' => {
                let items = if op == b's' {
                    let v = pop(&mut stack).map_err(bad)?;
                    let k = pop(&mut stack).map_err(bad)?;
                    vec![k, v]
                } else {
                    to_mark(&mut stack).map_err(bad)?
                };
                let items = pairs(&items).map_err(bad)?;
                let dict = top(&stack).map_err(bad)?;
                match &mut objects[dict] {
                    Value::Dict(v) => v.extend(items),
                    other => return Err(bad(&format!("items set on {}", kind(other)))),
                }
                None
            }
            // GLOBAL: module and name, a line each; STACK_GLOBAL: both from the stack.
            b'c' => {
                let module = r.line()?;
                let name = r.line()?;
                Some(Value::Global(module, name))
            }
            0x93 => {
                let name = pop(&mut stack).map_err(bad)?;
                let module = pop(&mut stack).map_err(bad)?;
                match (&objects[module], &objects[name]) {
                    (Value::Str(m), Value::Str(n)) => Some(Value::Global(m.clone(), n.clone())),
                    _ => return Err(bad("STACK_GLOBAL without two strings")),
                }
            }
            // REDUCE, NEWOBJ. A dict made empty by its class (OrderedDict()) is a dict, so
            // that its items can be set.
            b'R' | 0x81 => {
                let args = pop(&mut stack).map_err(bad)?;
                let callable = pop(&mut stack).map_err(bad)?;
                let empty_dict = matches!(&objects[callable], Value::Global(m, n)
                    if (m == "collections" && n == "OrderedDict") || (m == "builtins" && n == "dict"))
                    && matches!(&objects[args], Value::Tuple(a) if a.is_empty());
                Some(if empty_dict {
                    Value::Dict(Vec::new())
                } else {
                    Value::Call { callable, args }
                })
            }
            // BUILD: an object's state (an OrderedDict's `_metadata`): not needed.
            b'b' => {
                pop(&mut stack).map_err(bad)?;
                top(&stack).map_err(bad)?;
                None
            }
            b'Q' => Some(Value::Persistent(pop(&mut stack).map_err(bad)?)),
            // BINPUT, LONG_BINPUT, MEMOIZE: the top object, shared.
            b'q' | b'r' | 0x94 => {
                let index = match op {
                    b'q' => r.u8()? as u32,
                    b'r' => u32::from_le_bytes(r.array()?),
                    _ => memo.len() as u32,
                };
                memo.insert(index, top(&stack).map_err(bad)?);
                None
            }
            // BINGET, LONG_BINGET.
            b'h' | b'j' => {
                let index = if op == b'h' {
                    r.u8()? as u32
                } else {
                    u32::from_le_bytes(r.array()?)
                };
                let id = *memo
                    .get(&index)
                    .ok_or_else(|| bad(&format!("memo {index} read before it was written")))?;
                stack.push(Slot::Object(id));
                None
            }
            // POP, POP_MARK, DUP.
            b'0' => {
                stack.pop().ok_or_else(|| bad("POP on an empty stack"))?;
                None
            }
            b'1' => {
                to_mark(&mut stack).map_err(bad)?;
                None
            }
            b'2' => {
                let id = top(&stack).map_err(bad)?;
                stack.push(Slot::Object(id));
                None
            }
            _ => {
                return Err(bad(&format!(
                    "opcode 0x{op:02x}, which torch.save does not write"
                )));
            }
        };
        if let Some(v) = pushed {
            objects.push(v);
            stack.push(Slot::Object(objects.len() - 1));
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "a bool",
        Value::Int(_) | Value::BigInt(_) => "an int",
        Value::Float(_) => "a float",
        Value::Str(_) => "a string",
        Value::Bytes(_) => "bytes",
        Value::Tuple(_) => "a tuple",
        Value::List(_) => "a list",
        Value::Dict(_) => "a dict",
        Value::Global(..) => "a class",
        Value::Call { .. } => "an object",
        Value::Persistent(_) => "a storage",
    }
}

fn pop(stack: &mut Vec<Slot>) -> Result<Id, &'static str> {
    match stack.pop() {
        Some(Slot::Object(id)) => Ok(id),
        Some(Slot::Mark) => Err("an object expected, a mark found"),
        None => Err("the stack is empty"),
    }
}

fn top(stack: &[Slot]) -> Result<Id, &'static str> {
    match stack.last() {
        Some(Slot::Object(id)) => Ok(*id),
        Some(Slot::Mark) => Err("an object expected, a mark found"),
        None => Err("the stack is empty"),
    }
}

/// The objects above the topmost mark, which is removed.
fn to_mark(stack: &mut Vec<Slot>) -> Result<Vec<Id>, &'static str> {
    let mark = stack
        .iter()
        .rposition(|s| matches!(s, Slot::Mark))
        .ok_or("no mark on the stack")?;
    let items = stack
        .split_off(mark + 1)
        .into_iter()
        .map(|s| match s {
            Slot::Object(id) => id,
            Slot::Mark => unreachable!("the topmost mark is below"),
        })
        .collect();
    stack.pop();
    Ok(items)
}

fn pairs(items: &[Id]) -> Result<Vec<(Id, Id)>, &'static str> {
    if !items.len().is_multiple_of(2) {
        return Err("a dict's items are not key-value pairs");
    }
    Ok(items.chunks(2).map(|kv| (kv[0], kv[1])).collect())
}

/// A cursor over the pickle's bytes.
struct Reader<'a> {
    bytes: &'a [u8],
    at: usize,
}

impl<'a> Reader<'a> {
    fn u8(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], String> {
        Ok(self.take(N)?.try_into().expect("N bytes"))
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8], String> {
        let out = self
            .at
            .checked_add(n)
            .and_then(|end| self.bytes.get(self.at..end))
            .ok_or_else(|| format!("the pickle ends inside an object (byte {})", self.at))?;
        self.at += n;
        Ok(out)
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.bytes[self.at.min(self.bytes.len())..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or_else(|| format!("the pickle ends inside a name (byte {})", self.at))?;
        self.at += n + 1;
        Ok(String::from_utf8_lossy(&rest[..n]).into_owned())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// What Python writes for `{"a": (1, -2, 3.5), "b": [None, True, "x"]}` with
    /// `pickle.dumps(..., protocol=2)`.
    const PY: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00aq\x01K\x01J\xfe\xff\xff\xffG@\x0c\x00\x00\x00\x00\x00\x00\x87q\x02X\x01\x00\x00\x00bq\x03]q\x04(N\x88X\x01\x00\x00\x00xq\x05eu.";

    #[test]
    fn a_python_pickle_reads_back() {
        let p = parse(PY, 0).unwrap();
        assert_eq!(p.end, PY.len());
        let Value::Dict(items) = p.get(p.root) else {
            panic!("{:?}", p.get(p.root))
        };
        assert_eq!(items.len(), 2);
        let (a, tuple) = items[0];
        assert_eq!(p.str(a), Some("a"));
        let t: Vec<&Value> = p.items(tuple).unwrap().iter().map(|&i| p.get(i)).collect();
        assert_eq!(t, [&Value::Int(1), &Value::Int(-2), &Value::Float(3.5)]);
        let (b, list) = items[1];
        assert_eq!(p.str(b), Some("b"));
        let l: Vec<&Value> = p.items(list).unwrap().iter().map(|&i| p.get(i)).collect();
        assert_eq!(
            l,
            [&Value::None, &Value::Bool(true), &Value::Str("x".into())]
        );
    }

    #[test]
    fn long1_is_twos_complement() {
        for (bytes, v) in [
            (&b"\x80\x02\x8a\x02\x00\x01."[..], 256i64),
            (b"\x80\x02\x8a\x01\xff.", -1),
            (b"\x80\x02\x8a\x00.", 0),
            (
                b"\x80\x02\x8a\x08\xff\xff\xff\xff\xff\xff\xff\x7f.",
                i64::MAX,
            ),
        ] {
            let p = parse(bytes, 0).unwrap();
            assert_eq!(p.int(p.root), Some(v), "{bytes:?}");
        }
    }

    /// Nested a million deep, or an object doubled through the memo a hundred times: read in
    /// time and memory proportional to the bytes, without recursion.
    #[test]
    fn hostile_shapes_cost_what_their_bytes_do() {
        let depth = 1_000_000;
        let mut deep = vec![0x80, 2];
        deep.extend(std::iter::repeat_n(b'(', depth));
        deep.extend(std::iter::repeat_n(b'l', depth));
        deep.push(b'.');
        assert_eq!(parse(&deep, 0).unwrap().objects.len(), depth);
        let mut doubling = vec![0x80, 2, b']', b'q', 0];
        for _ in 0..100 {
            doubling.extend([b'(', b'h', 0, b'h', 0, b'l', b'q', 0]);
        }
        doubling.push(b'.');
        assert_eq!(parse(&doubling, 0).unwrap().objects.len(), 101);
    }

    #[test]
    fn broken_pickles_say_what_and_where() {
        for (bytes, words) in [
            (&b"\x80\x02(l"[..], "ends inside"),
            (b"\x80\x02P", "opcode 0x50"),
            (b"\x80\x09N.", "protocol 9"),
            (b"\x80\x02h\x05.", "memo 5 read before"),
            (b"\x80\x02X\xff\xff\xff\xffab", "ends inside"),
            (b"\x80\x02.", "stack is empty"),
            (b"\x80\x02K\x01K\x02u.", "no mark"),
            (b"\x80\x02K\x01(K\x01K\x02u.", "items set on an int"),
            (b"\x80\x02cos\nsystem", "ends inside a name"),
        ] {
            let e = parse(bytes, 0).unwrap_err();
            assert!(e.contains(words) && e.contains("byte"), "{bytes:?}: {e}");
        }
    }
}
