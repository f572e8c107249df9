//! Where new workers go and what the job ids say: pure functions. A worker's
//! job id names its host (`<cluster>-w<i>.<host>`), so status, cancel and
//! logs know where to look without any local state, and the id is also the
//! Dask worker name (DNS- and shell-safe: the host part is a label).

use muster_core::JobId;

/// The scheduler's job id on `host`.
pub fn scheduler_id(cluster: &str, host: &str) -> JobId {
    JobId(format!("{cluster}-scheduler.{host}"))
}

/// Worker `index`'s job id on `host`.
pub fn worker_id(cluster: &str, index: u64, host: &str) -> JobId {
    JobId(format!("{cluster}-w{index}.{host}"))
}

/// The host label in one of this cluster's job ids.
pub fn host_of<'a>(cluster: &str, id: &'a JobId) -> Option<&'a str> {
    let rest = id.as_str().strip_prefix(cluster)?.strip_prefix('-')?;
    let (role, host) = rest.split_once('.')?;
    let valid_role = role == "scheduler"
        || role
            .strip_prefix('w')
            .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    (valid_role && !host.is_empty()).then_some(host)
}

/// A host that may take workers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Slot {
    /// Workers it runs now.
    pub current: u32,
    /// Most it may run (`None`: no limit).
    pub capacity: Option<u32>,
    /// Whether it can be reached.
    pub reachable: bool,
}

/// Chooses a host (index into `slots`) for each of `n` new workers: always
/// the reachable host with the fewest workers that still has room, the
/// earlier one on ties. Returns the choices and how many found no room.
pub fn place(n: u32, slots: &[Slot]) -> (Vec<usize>, u32) {
    let mut load: Vec<u32> = slots.iter().map(|s| s.current).collect();
    let mut out = Vec::new();
    for placed in 0..n {
        let best = slots
            .iter()
            .enumerate()
            .filter(|(i, s)| s.reachable && s.capacity.is_none_or(|c| load[*i] < c))
            .min_by_key(|(i, _)| (load[*i], *i))
            .map(|(i, _)| i);
        match best {
            Some(i) => {
                load[i] += 1;
                out.push(i);
            }
            None => return (out, n - placed),
        }
    }
    (out, 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot(current: u32, capacity: Option<u32>, reachable: bool) -> Slot {
        Slot {
            current,
            capacity,
            reachable,
        }
    }

    #[test]
    fn ids_name_their_host_and_parse_back() {
        let id = worker_id("demo", 3, "h2");
        assert_eq!(id.as_str(), "demo-w3.h2");
        assert_eq!(host_of("demo", &id), Some("h2"));
        assert_eq!(
            host_of("demo", &scheduler_id("demo", "10.200.0.11")),
            Some("10.200.0.11")
        );
        assert_eq!(host_of("demo", &JobId::from("demo-w3")), None);
        assert_eq!(host_of("demo", &JobId::from("other-w3.h2")), None);
        assert_eq!(host_of("demo", &JobId::from("demo-x.h2")), None);
        assert_eq!(host_of("de", &JobId::from("demo-w1.h2")), None);
    }

    #[test]
    fn workers_spread_evenly_within_capacity_skipping_unreachable_hosts() {
        let slots = [
            slot(0, Some(2), true),
            slot(0, Some(2), false),
            slot(1, Some(2), true),
        ];
        assert_eq!(place(2, &slots), (vec![0, 0], 0));
        assert_eq!(place(3, &slots), (vec![0, 0, 2], 0));
        assert_eq!(place(5, &slots), (vec![0, 0, 2], 2));
        let open = [slot(2, None, true), slot(0, None, true)];
        assert_eq!(place(3, &open), (vec![1, 1, 0], 0));
        assert_eq!(place(1, &[]), (vec![], 1));
        assert_eq!(place(0, &open), (vec![], 0));
    }
}
