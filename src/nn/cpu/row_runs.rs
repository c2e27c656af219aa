//! How the rows of an activation are cut into the runs parallel tasks take: a fixed number at a
//! time, or one run per sequence where a batch's sequences are packed one after another without
//! padding (each sequence as long as its own tokens).

/// How M rows are cut into runs.
#[derive(Clone, Copy, Debug)]
pub(crate) enum Runs<'a> {
    /// `n` rows a run (the last one shorter where M is not a multiple).
    Every(usize),
    /// Runs of these lengths, in order; they add up to M.
    Lengths(&'a [usize]),
}

impl Runs<'_> {
    /// `buf` (rows of `row_len` elements) cut into the runs, each with its first row.
    pub(crate) fn split<T>(self, buf: &mut [T], row_len: usize) -> Vec<(usize, &mut [T])> {
        match self {
            Runs::Every(n) => {
                let n = n.max(1);
                buf.chunks_mut((n * row_len).max(1))
                    .enumerate()
                    .map(|(i, run)| (i * n, run))
                    .collect()
            }
            Runs::Lengths(lengths) => {
                let total: usize = lengths.iter().sum();
                assert_eq!(buf.len(), total * row_len, "the runs cover the rows");
                let (mut rest, mut first) = (buf, 0);
                let mut out = Vec::with_capacity(lengths.len());
                for &len in lengths {
                    let (run, tail) = rest.split_at_mut(len * row_len);
                    out.push((first, run));
                    (rest, first) = (tail, first + len);
                }
                out
            }
        }
    }
}

/// Each run's first row: the prefix sums of `lengths`.
pub(crate) fn starts(lengths: &[usize]) -> Vec<usize> {
    lengths
        .iter()
        .scan(0, |at, &len| {
            let first = *at;
            *at += len;
            Some(first)
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn runs_cover_the_rows_in_order() {
        let mut buf: Vec<u32> = (0..14).collect();
        let every: Vec<(usize, Vec<u32>)> = Runs::Every(3)
            .split(&mut buf[..12], 2)
            .into_iter()
            .map(|(f, r)| (f, r.to_vec()))
            .collect();
        assert_eq!(every[0], (0, vec![0, 1, 2, 3, 4, 5]));
        assert_eq!(every[1], (3, vec![6, 7, 8, 9, 10, 11]));
        let lengths = [2, 0, 1, 4];
        let runs = Runs::Lengths(&lengths).split(&mut buf, 2);
        let firsts: Vec<usize> = runs.iter().map(|(f, _)| *f).collect();
        assert_eq!(firsts, starts(&lengths));
        assert_eq!(firsts, [0, 2, 2, 3]);
        let sizes: Vec<usize> = runs.iter().map(|(_, r)| r.len()).collect();
        assert_eq!(sizes, [4, 0, 2, 8]);
    }
}
