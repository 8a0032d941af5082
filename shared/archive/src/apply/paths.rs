//! Tar paths made relative to the root, and the byte-string path helpers extraction uses.

use super::Result;

/// A tar path made relative to the root: no leading `/`, no `.` or empty components, `..`
/// resolved lexically (and refused when it would climb above the root).
pub(crate) struct RelPath {
    pub(super) full: Vec<u8>,
    /// Where the last component starts in `full`.
    name_start: usize,
}

impl RelPath {
    pub(crate) fn parse(raw: &[u8]) -> Result<Self, String> {
        let mut comps: Vec<&[u8]> = Vec::new();
        for comp in raw.split(|b| *b == b'/') {
            match comp {
                b"" | b"." => {}
                b".." => {
                    if comps.pop().is_none() {
                        return Err("\"..\" climbs above the root".to_owned());
                    }
                }
                c => comps.push(c),
            }
        }
        let full = comps.join(&b'/');
        let name_start = comps.last().map_or(0, |last| full.len() - last.len());
        Ok(Self { full, name_start })
    }

    pub(super) fn is_root(&self) -> bool {
        self.full.is_empty()
    }

    pub(super) fn parent(&self) -> &[u8] {
        &self.full[..self.name_start.saturating_sub(1)]
    }

    pub(super) fn name(&self) -> &[u8] {
        &self.full[self.name_start..]
    }

    /// Byte offsets where each component ends (exclusive), for walking prefixes.
    pub(super) fn component_ends(path: &[u8]) -> impl Iterator<Item = usize> + '_ {
        path.iter()
            .enumerate()
            .filter(|(_, b)| **b == b'/')
            .map(|(i, _)| i)
            .chain((!path.is_empty()).then_some(path.len()))
    }
}

pub(super) fn split_parent(path: &[u8]) -> (&[u8], &[u8]) {
    match path.iter().rposition(|b| *b == b'/') {
        Some(i) => (&path[..i], &path[i + 1..]),
        None => (&[], path),
    }
}

pub(super) fn join(parent: &[u8], name: &[u8]) -> Vec<u8> {
    let mut v = Vec::with_capacity(parent.len() + 1 + name.len());
    v.extend_from_slice(parent);
    if !parent.is_empty() {
        v.push(b'/');
    }
    v.extend_from_slice(name);
    v
}

/// Joins a symbolic link's target to the directory holding the link, resolving `..` lexically and
/// stopping at the root (as `RESOLVE_IN_ROOT` does).
pub(super) fn clamp_join(base: &[u8], link: &[u8]) -> Vec<u8> {
    let mut comps: Vec<&[u8]> = base
        .split(|b| *b == b'/')
        .filter(|c| !c.is_empty())
        .collect();
    for c in link.split(|b| *b == b'/') {
        match c {
            b"" | b"." => {}
            b".." => {
                comps.pop();
            }
            c => comps.push(c),
        }
    }
    comps.join(&b'/')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rel_paths() {
        let p = RelPath::parse(b"/a//./b/../c/d").expect("valid");
        assert_eq!(p.full, b"a/c/d");
        assert_eq!(p.parent(), b"a/c");
        assert_eq!(p.name(), b"d");
        let p = RelPath::parse(b"./x").expect("valid");
        assert_eq!((p.parent(), p.name()), (&b""[..], &b"x"[..]));
        assert!(RelPath::parse(b"./").expect("valid").is_root());
        assert!(RelPath::parse(b"a/../../x").is_err());
        assert!(RelPath::parse(b"/../x").is_err());
        assert_eq!(
            RelPath::component_ends(b"a/bc/d").collect::<Vec<_>>(),
            vec![1, 4, 6]
        );
        assert_eq!(RelPath::component_ends(b"").count(), 0);
    }

    #[test]
    fn link_targets_clamp_at_root() {
        assert_eq!(clamp_join(b"a/b", b"../../../x"), b"x");
        assert_eq!(clamp_join(b"a/b", b"c/./d"), b"a/b/c/d");
        assert_eq!(clamp_join(b"", b"/etc/"), b"etc");
    }
}
