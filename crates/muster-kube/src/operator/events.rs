//! Kubernetes Events as muster-core's [`Timeline`]: one Event on the
//! resource per decision, its reason the decision's kind in CamelCase
//! (`scale-up` → `ScaleUp`), Warning for failures. A failure to publish is
//! logged, never fatal: the Event is a record, not the state.

use async_trait::async_trait;
use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType};
use muster_core::Timeline;

use super::Context;

/// `scale-up` → `ScaleUp`.
pub fn reason_of(kind: &str) -> String {
    kind.split('-')
        .map(|w| {
            let mut c = w.chars();
            c.next()
                .map(|f| f.to_uppercase().collect::<String>() + c.as_str())
                .unwrap_or_default()
        })
        .collect()
}

/// True for the kinds that are Warnings.
pub fn is_warning(kind: &str) -> bool {
    kind.ends_with("failed") || kind == "died" || kind == "paused" || kind == "conflict"
}

/// Events on one object.
pub struct EventTimeline<'a> {
    /// The operator's context (its recorder and counters).
    pub ctx: &'a Context,
    /// The object the Events are about.
    pub object: ObjectReference,
    /// The Events' action (`Scale`, `Reconcile`).
    pub action: &'static str,
}

impl EventTimeline<'_> {
    /// Publishes one Event for a decision of this `kind`.
    pub async fn publish(&self, kind: &str, message: &str) {
        self.publish_as(&reason_of(kind), is_warning(kind), message)
            .await
    }

    /// Publishes one Event with this reason.
    pub async fn publish_as(&self, reason: &str, warning: bool, message: &str) {
        let ev = Event {
            type_: if warning {
                EventType::Warning
            } else {
                EventType::Normal
            },
            reason: reason.into(),
            note: Some(message.chars().take(1000).collect()),
            action: self.action.into(),
            secondary: None,
        };
        match self.ctx.recorder.publish(&ev, &self.object).await {
            Ok(()) => {
                self.ctx.metrics.events.inc();
            }
            Err(e) => tracing::warn!("publishing an Event: {e}"),
        }
    }
}

#[async_trait]
impl Timeline for EventTimeline<'_> {
    async fn record(&self, kind: &str, message: &str) -> muster_core::Result<()> {
        tracing::info!(kind, "{message}");
        self.publish(kind, message).await;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_become_reasons() {
        assert_eq!(reason_of("scale-up"), "ScaleUp");
        assert_eq!(reason_of("retire-failed"), "RetireFailed");
        assert_eq!(reason_of("steady"), "Steady");
        assert!(is_warning("launch-failed") && is_warning("died"));
        assert!(!is_warning("scale-down"));
    }
}
