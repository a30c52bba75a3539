//! The binary's allocator: the system's, with the few most recently freed large blocks kept for
//! a request of the same size and alignment.
//!
//! A network's feature maps are blocks of tens to hundreds of megabytes, freed and asked for
//! again at the same sizes layer after layer. glibc gives every block over 32 MiB its own
//! mapping and unmaps it when freed, so each new map costs a page fault and the kernel's
//! zeroing of every page: perf had that at about 12 % of `nvnet predict` on the CPU. A kept block
//! is handed out again without either.
//!
//! The peak stays that of the system allocator: a request that matches no kept block first
//! returns every kept block to the system, and a kept block is memory that was in use before it
//! was freed, so what is kept plus what is in use never exceeds an earlier amount in use.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::Mutex;

/// Blocks from this size on are kept (glibc maps blocks over 32 MiB itself).
const LARGE: usize = 32 << 20;
/// A request from this size on that no kept block serves returns them all to the system first:
/// smaller ones are left to go on (they are most requests), and are too small to matter.
const MEDIUM: usize = 1 << 20;
/// How many freed blocks are kept at most.
const KEPT: usize = 8;

pub struct ReusingAllocator {
    kept: Mutex<Kept>,
}

struct Kept {
    blocks: [(usize, usize, usize); KEPT],
    len: usize,
}

impl ReusingAllocator {
    pub const fn new() -> Self {
        ReusingAllocator {
            kept: Mutex::new(Kept {
                blocks: [(0, 0, 0); KEPT],
                len: 0,
            }),
        }
    }

    /// A kept block of `layout`, or none (then every kept block has gone back to the system).
    fn take(&self, layout: Layout) -> Option<*mut u8> {
        let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
        let len = kept.len;
        if let Some(i) = kept.blocks[..len]
            .iter()
            .position(|&(_, size, align)| size == layout.size() && align == layout.align())
        {
            let (ptr, _, _) = kept.blocks[i];
            kept.blocks[i] = kept.blocks[len - 1];
            kept.len -= 1;
            return Some(ptr as *mut u8);
        }
        for &(ptr, size, align) in &kept.blocks[..len] {
            // SAFETY: each kept block came from System with this size and alignment and is not
            // in use.
            unsafe {
                System.dealloc(
                    ptr as *mut u8,
                    Layout::from_size_align_unchecked(size, align),
                )
            };
        }
        kept.len = 0;
        None
    }
}

impl Default for ReusingAllocator {
    fn default() -> Self {
        Self::new()
    }
}

// SAFETY: blocks are the system allocator's; a kept block is handed out once, and only for the
// size and alignment it was allocated with.
unsafe impl GlobalAlloc for ReusingAllocator {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MEDIUM
            && let Some(ptr) = self.take(layout)
        {
            return ptr;
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if layout.size() >= MEDIUM
            && let Some(ptr) = self.take(layout)
        {
            // SAFETY: a block of layout.size() bytes.
            unsafe { ptr.write_bytes(0, layout.size()) };
            return ptr;
        }
        // SAFETY: the caller's layout, passed on.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // The system's: glibc grows a mapped block in place (mremap), where a new block and a
        // copy would hold both at once.
        // SAFETY: the caller's block, layout and size, passed on.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if layout.size() >= LARGE {
            let mut kept = self.kept.lock().unwrap_or_else(|e| e.into_inner());
            if kept.len < KEPT {
                let len = kept.len;
                kept.blocks[len] = (ptr as usize, layout.size(), layout.align());
                kept.len += 1;
                return;
            }
        }
        // SAFETY: the caller's block and layout, passed on.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A freed large block is handed out again for its size, and a request of another size
    /// returns the kept blocks to the system first (none is handed out twice).
    #[test]
    fn a_freed_large_block_is_reused_for_its_size_only() {
        let a = ReusingAllocator::new();
        let big = Layout::from_size_align(LARGE, 64).unwrap();
        let other = Layout::from_size_align(LARGE + 4096, 64).unwrap();
        unsafe {
            let p = a.alloc(big);
            p.write_bytes(7, big.size());
            a.dealloc(p, big);
            let q = a.alloc_zeroed(big);
            assert_eq!(p, q, "the kept block is reused");
            assert!(
                std::slice::from_raw_parts(q, big.size())
                    .iter()
                    .all(|&b| b == 0)
            );
            a.dealloc(q, big);
            let r = a.alloc(other);
            assert_eq!(
                a.kept.lock().unwrap().len,
                0,
                "a miss empties the kept blocks"
            );
            a.dealloc(r, other);
            let small = Layout::from_size_align(1024, 8).unwrap();
            let s = a.alloc(small);
            a.dealloc(s, small);
            assert_eq!(a.kept.lock().unwrap().len, 1, "small blocks are not kept");
            let t = a.alloc(other);
            assert_eq!(t, r);
            a.dealloc(t, other);
        }
    }
}
