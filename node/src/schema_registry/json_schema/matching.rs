//! Maximum bipartite matching (augmenting paths), for pairing the sub-schemas of two
//! `oneOf`/`anyOf`/`allOf`s one to one.

/// The size of a maximum matching between `left` nodes `0..edges.len()` and right
/// nodes `0..right`, where `edges[l]` lists the right nodes `l` may pair with.
pub fn maximum(edges: &[Vec<usize>], right: usize) -> usize {
    let mut owner: Vec<Option<usize>> = vec![None; right];
    let mut size = 0;
    for l in 0..edges.len() {
        let mut visited = vec![false; right];
        if augment(l, edges, &mut owner, &mut visited) {
            size += 1;
        }
    }
    size
}

/// Find a right node for `l`, moving earlier pairs along if need be. The recursion is
/// as deep as the number of left nodes (sub-schemas of one combination).
fn augment(
    l: usize,
    edges: &[Vec<usize>],
    owner: &mut [Option<usize>],
    visited: &mut [bool],
) -> bool {
    for &r in &edges[l] {
        if r >= visited.len() || visited[r] {
            continue;
        }
        visited[r] = true;
        let free = match owner[r] {
            None => true,
            Some(other) => augment(other, edges, owner, visited),
        };
        if free {
            owner[r] = Some(l);
            return true;
        }
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches() {
        assert_eq!(maximum(&[vec![0, 1], vec![0]], 2), 2);
        assert_eq!(maximum(&[vec![0], vec![0]], 2), 1);
        assert_eq!(maximum(&[vec![], vec![1]], 2), 1);
        assert_eq!(maximum(&[], 3), 0);
    }
}
