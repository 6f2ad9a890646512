//! Kernel CPU-list syntax ("0-3,8,10-11"), as in sysfs `cpulist` files and
//! `/proc/irq/N/smp_affinity_list`, and the same syntax the broker's `--cpu-list` takes.

/// Parse a CPU list. Empty input is an empty list; malformed parts are skipped,
/// ranges larger than 65536 CPUs are refused (a corrupt file must not allocate wildly).
pub fn parse(text: &str) -> Vec<u32> {
    let mut cpus = Vec::new();
    for part in text.trim().split(',') {
        let part = part.trim();
        if part.is_empty() {
            continue;
        }
        // "a-b:stride/group" syntax exists for the kernel's boot parameters; sysfs does
        // not print it, so only the range before ':' is honoured.
        let part = part.split(':').next().unwrap_or("");
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.trim().parse::<u32>(), b.trim().parse::<u32>()) {
                    if a <= b && b - a < 65536 {
                        cpus.extend(a..=b);
                    }
                }
            }
            None => {
                if let Ok(c) = part.parse::<u32>() {
                    cpus.push(c);
                }
            }
        }
    }
    cpus.sort_unstable();
    cpus.dedup();
    cpus
}

/// Format a sorted or unsorted CPU list compactly: [0,1,2,5,7,8] -> "0-2,5,7-8".
pub fn format(cpus: &[u32]) -> String {
    let mut sorted = cpus.to_vec();
    sorted.sort_unstable();
    sorted.dedup();
    let mut out = Vec::new();
    let mut i = 0;
    while i < sorted.len() {
        let start = sorted[i];
        let mut end = start;
        while i + 1 < sorted.len() && sorted[i + 1] == end + 1 {
            i += 1;
            end = sorted[i];
        }
        if start == end {
            out.push(start.to_string());
        } else {
            out.push(format!("{start}-{end}"));
        }
        i += 1;
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip() {
        assert_eq!(parse("0-3,8,10-11\n"), vec![0, 1, 2, 3, 8, 10, 11]);
        assert_eq!(format(&[11, 10, 8, 3, 2, 1, 0]), "0-3,8,10-11");
        assert_eq!(parse(""), Vec::<u32>::new());
        assert_eq!(format(&[]), "");
    }

    #[test]
    fn garbage_is_skipped() {
        assert_eq!(parse("x,3-1,2,-,5-"), vec![2]);
        assert_eq!(parse("0-4294967295"), Vec::<u32>::new());
        assert_eq!(parse("0-2:1/2"), vec![0, 1, 2]);
        // nohz_full reads "(null)" on kernels built with NO_HZ_FULL when it is not set.
        assert_eq!(parse("(null)"), Vec::<u32>::new());
    }
}
