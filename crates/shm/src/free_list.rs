//! First-fit allocation of blocks in a range of an arena, with neighbours merged on release.

use std::collections::BTreeMap;

/// Blocks start and end on this many bytes (a cache line, and numpy's alignment needs).
pub(crate) const ALIGN: usize = 64;

/// The free ranges of `[start, end)`: offset → length.
#[derive(Debug)]
pub(crate) struct FreeList {
    free: BTreeMap<usize, usize>,
}

/// `len` rounded up to [`ALIGN`], or `None` on overflow.
pub(crate) fn aligned(len: usize) -> Option<usize> {
    len.checked_add(ALIGN - 1).map(|l| l & !(ALIGN - 1))
}

impl FreeList {
    /// All of `[start, end)` free; `start` and `end` must be multiples of [`ALIGN`].
    pub(crate) fn new(start: usize, end: usize) -> Self {
        let mut free = BTreeMap::new();
        if end > start {
            free.insert(start, end - start);
        }
        FreeList { free }
    }

    /// The offset of a free block of `len` bytes (a multiple of [`ALIGN`], not zero), now taken.
    pub(crate) fn take(&mut self, len: usize) -> Option<usize> {
        let (&offset, &size) = self.free.iter().find(|&(_, &size)| size >= len)?;
        self.free.remove(&offset);
        if size > len {
            self.free.insert(offset + len, size - len);
        }
        Some(offset)
    }

    /// Gives back the block `take` returned at `offset`, merging it with free neighbours.
    pub(crate) fn give_back(&mut self, mut offset: usize, mut len: usize) {
        if let Some((&before, &size)) = self.free.range(..offset).next_back()
            && before + size == offset
        {
            self.free.remove(&before);
            offset = before;
            len += size;
        }
        if let Some(size) = self.free.remove(&(offset + len)) {
            len += size;
        }
        self.free.insert(offset, len);
    }

    /// Free bytes in all.
    #[cfg(test)]
    fn free_bytes(&self) -> usize {
        self.free.values().sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_taken_first_fit_and_merge_when_given_back() {
        let mut list = FreeList::new(0, 4 * ALIGN);
        let a = list.take(ALIGN).unwrap();
        let b = list.take(2 * ALIGN).unwrap();
        let c = list.take(ALIGN).unwrap();
        assert_eq!((a, b, c), (0, ALIGN, 3 * ALIGN));
        assert_eq!(list.take(ALIGN), None, "full");
        list.give_back(a, ALIGN);
        list.give_back(c, ALIGN);
        assert_eq!(
            list.take(2 * ALIGN),
            None,
            "two free blocks that are not adjacent"
        );
        list.give_back(b, 2 * ALIGN);
        assert_eq!(list.free_bytes(), 4 * ALIGN);
        assert_eq!(list.take(4 * ALIGN), Some(0), "merged back into one block");
    }

    #[test]
    fn sizes_round_up_to_the_alignment() {
        assert_eq!(aligned(1), Some(ALIGN));
        assert_eq!(aligned(ALIGN), Some(ALIGN));
        assert_eq!(aligned(ALIGN + 1), Some(2 * ALIGN));
        assert_eq!(aligned(usize::MAX), None);
    }
}
