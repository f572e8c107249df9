//! Leader election through a `coordination.k8s.io/v1` Lease, so that two
//! operator replicas never act at once. [`decide`] is the pure rule; the
//! rest reads and writes the Lease with optimistic concurrency (a replace
//! carries the resourceVersion it read, so two contenders cannot both win).

use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{MicroTime, ObjectMeta};
use k8s_openapi::jiff::Timestamp;
use kube::Client;
use kube::api::{Api, PostParams};

use super::Error;

/// The Lease's name.
pub const NAME: &str = "muster-operator";
/// How long a holder's claim lasts without renewal.
pub const DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews.
pub const RENEW: Duration = Duration::from_secs(5);

/// What to do with the Lease as it stands.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody holds it, it expired, or we hold it: take or renew it.
    Take,
    /// Someone else holds it and it is fresh: wait.
    Wait,
}

/// The pure rule: take the Lease when it is free, ours, or expired.
pub fn decide(spec: Option<&LeaseSpec>, me: &str, now: Timestamp) -> Claim {
    let Some(spec) = spec else { return Claim::Take };
    let holder = spec.holder_identity.as_deref().unwrap_or_default();
    if holder.is_empty() || holder == me {
        return Claim::Take;
    }
    let Some(renewed) = spec.renew_time.as_ref().map(|t| t.0) else {
        return Claim::Take;
    };
    let lasts = i64::from(spec.lease_duration_seconds.unwrap_or(15));
    let expires = renewed + jiff_secs(lasts);
    if now > expires {
        Claim::Take
    } else {
        Claim::Wait
    }
}

fn jiff_secs(s: i64) -> k8s_openapi::jiff::SignedDuration {
    k8s_openapi::jiff::SignedDuration::from_secs(s)
}

fn claimed(me: &str, previous: Option<&LeaseSpec>) -> LeaseSpec {
    let now = MicroTime(Timestamp::now());
    let ours = previous.and_then(|p| p.holder_identity.as_deref()) == Some(me);
    LeaseSpec {
        holder_identity: Some(me.to_string()),
        lease_duration_seconds: Some(DURATION.as_secs() as i32),
        renew_time: Some(now.clone()),
        acquire_time: if ours {
            previous.and_then(|p| p.acquire_time.clone())
        } else {
            Some(now)
        },
        lease_transitions: Some(
            previous.and_then(|p| p.lease_transitions).unwrap_or(0) + i32::from(!ours),
        ),
        ..LeaseSpec::default()
    }
}

/// One attempt: true when we hold the Lease afterwards.
async fn try_once(api: &Api<Lease>, me: &str) -> Result<bool, Error> {
    let current = api
        .get_opt(NAME)
        .await
        .map_err(Error::kube(format!("reading Lease {NAME}")))?;
    if decide(
        current.as_ref().and_then(|l| l.spec.as_ref()),
        me,
        Timestamp::now(),
    ) == Claim::Wait
    {
        return Ok(false);
    }
    let result = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(NAME.into()),
                    ..ObjectMeta::default()
                },
                spec: Some(claimed(me, None)),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            lease.spec = Some(claimed(me, lease.spec.as_ref()));
            api.replace(NAME, &PostParams::default(), &lease).await
        }
    };
    match result {
        Ok(_) => Ok(true),
        // Someone else wrote it between our read and our write.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(e) => Err(Error::kube(format!("writing Lease {NAME}"))(e)),
    }
}

/// Waits until this replica holds the Lease.
pub async fn acquire(client: &Client, namespace: &str, me: &str) -> Result<(), Error> {
    let api: Api<Lease> = Api::namespaced(client.clone(), namespace);
    loop {
        match try_once(&api, me).await {
            Ok(true) => {
                tracing::info!(lease = NAME, namespace, identity = me, "became the leader");
                return Ok(());
            }
            Ok(false) => tracing::debug!("another replica leads; waiting"),
            Err(e) => tracing::warn!("leader election: {e}"),
        }
        tokio::time::sleep(RENEW).await;
    }
}

/// Renews the Lease forever; exits the process once it cannot be renewed
/// within its duration (another replica may then take over).
pub async fn hold(client: Client, namespace: String, me: String) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let mut last_ok = std::time::Instant::now();
    loop {
        tokio::time::sleep(RENEW).await;
        // A renewal the API server does not answer in time is a failed one:
        // waiting on it past the Lease's end would let another replica act
        // beside this one.
        match tokio::time::timeout(RENEW, try_once(&api, &me)).await {
            Ok(Ok(true)) => {
                last_ok = std::time::Instant::now();
                continue;
            }
            Ok(Ok(false)) => {
                tracing::error!("{}", Error::LostLease(format!("{namespace}/{NAME}")));
                std::process::exit(1);
            }
            Ok(Err(e)) => tracing::warn!("renewing the Lease: {e}"),
            Err(_) => tracing::warn!("renewing the Lease: no answer within {RENEW:?}"),
        }
        if last_ok.elapsed() > DURATION - RENEW {
            tracing::error!("{}", Error::LostLease(format!("{namespace}/{NAME}")));
            std::process::exit(1);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(holder: &str, renewed_secs_ago: i64) -> LeaseSpec {
        LeaseSpec {
            holder_identity: Some(holder.into()),
            lease_duration_seconds: Some(15),
            renew_time: Some(MicroTime(Timestamp::now() - jiff_secs(renewed_secs_ago))),
            ..LeaseSpec::default()
        }
    }

    #[test]
    fn takes_a_free_own_or_expired_lease_and_waits_on_a_fresh_one() {
        let now = Timestamp::now();
        assert_eq!(decide(None, "a", now), Claim::Take);
        assert_eq!(decide(Some(&spec("a", 1)), "a", now), Claim::Take);
        assert_eq!(decide(Some(&spec("b", 1)), "a", now), Claim::Wait);
        assert_eq!(decide(Some(&spec("b", 30)), "a", now), Claim::Take);
        assert_eq!(decide(Some(&spec("", 1)), "a", now), Claim::Take);
    }
}
