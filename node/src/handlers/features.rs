//! UpdateFeatures with Kafka's controller semantics (FeatureControlManager) over the
//! features Spate runs ([`FEATURES`]), each supported at one level only: asking for
//! that level succeeds without changing anything, as Kafka answers an update to the
//! level already finalized; any other level is refused with INVALID_UPDATE_VERSION and
//! Kafka's message.

use spate_net::messages::update_features_response::UpdatableFeatureResult;
use spate_net::messages::{UpdateFeaturesRequest, UpdateFeaturesResponse};
use spate_net::ErrorCode;

use super::acls::CLUSTER_DENIED;
use super::api_versions::FEATURES;

/// Kafka's `FeatureUpdate.UpgradeType` codes.
const UPGRADE: i8 = 1;
const UNSAFE_DOWNGRADE: i8 = 3;

/// `cluster_alter`: whether the caller holds ALTER on the cluster; `controller`: the
/// node id Kafka's messages name as the local controller.
pub fn update(
    req: &UpdateFeaturesRequest,
    version: i16,
    cluster_alter: bool,
    controller: i32,
) -> UpdateFeaturesResponse {
    if !cluster_alter {
        return UpdateFeaturesResponse {
            error_code: ErrorCode::ClusterAuthorizationFailed.code(),
            error_message: Some(CLUSTER_DENIED.into()),
            ..Default::default()
        };
    }
    for u in &req.feature_updates {
        // Version 0 has no upgrade type, and Kafka's controller reads its default.
        let upgrade_type = if version == 0 {
            UPGRADE
        } else {
            u.upgrade_type
        };
        if let Err(reason) = check(&u.feature, u.max_version_level, upgrade_type, controller) {
            return UpdateFeaturesResponse {
                error_code: ErrorCode::InvalidUpdateVersion.code(),
                error_message: Some(format!(
                    "The update failed for all features since the following feature had an error: Invalid update version {} for feature {}. {reason}",
                    u.max_version_level, u.feature
                )),
                ..Default::default()
            };
        }
    }
    // Nothing to write, validate_only or not: every accepted level is the current one.
    // Kafka names each feature only up to version 1.
    let results = if version <= 1 {
        req.feature_updates
            .iter()
            .map(|u| UpdatableFeatureResult {
                feature: u.feature.clone(),
                ..Default::default()
            })
            .collect()
    } else {
        Vec::new()
    };
    UpdateFeaturesResponse {
        results,
        ..Default::default()
    }
}

/// Kafka's checks of one update, in its order. Spate supports each of its features
/// at its finalized level only, so a level that passes is the current one and the
/// upgrade/downgrade direction checks have nothing to refuse.
fn check(feature: &str, level: i16, upgrade_type: i8, controller: i32) -> Result<(), String> {
    if !(UPGRADE..=UNSAFE_DOWNGRADE).contains(&upgrade_type) {
        return Err("The controller does not support the given upgrade type.".into());
    }
    if level < 0 {
        return Err("A feature version cannot be less than 0.".into());
    }
    let supported = FEATURES.iter().find(|(name, _)| *name == feature);
    match supported {
        Some(&(_, runs)) if level != runs => Err(format!(
            "Local controller {controller} only supports versions {runs}-{runs}"
        )),
        Some(_) => Ok(()),
        // An unknown feature is supported at level 0 only, which Kafka then fails to find.
        None if level == 0 => Err(format!("Feature {feature} not found.")),
        None => Err(format!(
            "Local controller {controller} does not support this feature."
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use spate_net::messages::update_features_request::FeatureUpdateKey;

    fn request(updates: &[(&str, i16, i8)], validate_only: bool) -> UpdateFeaturesRequest {
        UpdateFeaturesRequest {
            timeout_ms: 60_000,
            feature_updates: updates
                .iter()
                .map(|&(feature, level, upgrade_type)| FeatureUpdateKey {
                    feature: feature.into(),
                    max_version_level: level,
                    allow_downgrade: false,
                    upgrade_type,
                })
                .collect(),
            validate_only,
        }
    }

    fn message(r: &UpdateFeaturesResponse) -> &str {
        r.error_message.as_deref().unwrap_or_default()
    }

    const PREFIX: &str =
        "The update failed for all features since the following feature had an error: ";

    #[test]
    fn the_current_level_is_accepted_as_a_no_op() {
        for validate_only in [false, true] {
            for upgrade_type in [1, 2, 3] {
                let req = request(&[("transaction.version", 2, upgrade_type)], validate_only);
                let r = update(&req, 2, true, 1);
                assert_eq!((r.error_code, r.results.len()), (0, 0));
            }
        }
        let req = request(&[("metadata.version", 25, 1)], false);
        let r = update(&req, 1, true, 1);
        assert_eq!(r.error_code, 0);
        assert_eq!(r.results[0].feature, "metadata.version");
        assert_eq!(r.results[0].error_code, 0);
    }

    #[test]
    fn other_levels_and_unknown_features_are_refused_as_kafka() {
        let cases = [
            (("transaction.version", 3, 1), "Invalid update version 3 for feature transaction.version. Local controller 7 only supports versions 2-2"),
            (("transaction.version", 1, 2), "Invalid update version 1 for feature transaction.version. Local controller 7 only supports versions 2-2"),
            (("transaction.version", 2, 0), "Invalid update version 2 for feature transaction.version. The controller does not support the given upgrade type."),
            (("transaction.version", -1, 1), "Invalid update version -1 for feature transaction.version. A feature version cannot be less than 0."),
            (("foo.version", 1, 1), "Invalid update version 1 for feature foo.version. Local controller 7 does not support this feature."),
            (("foo.version", 0, 2), "Invalid update version 0 for feature foo.version. Feature foo.version not found."),
        ];
        for (update_, expected) in cases {
            let r = update(&request(&[update_], false), 2, true, 7);
            assert_eq!(r.error_code, ErrorCode::InvalidUpdateVersion.code());
            assert_eq!(message(&r), format!("{PREFIX}{expected}"));
            assert!(r.results.is_empty());
        }
        // One refused update fails them all.
        let req = request(
            &[("transaction.version", 2, 1), ("group.version", 5, 1)],
            false,
        );
        let r = update(&req, 1, true, 7);
        assert_eq!(r.error_code, ErrorCode::InvalidUpdateVersion.code());
        assert!(r.results.is_empty());
    }

    #[test]
    fn without_alter_on_the_cluster_nothing_is_checked() {
        let r = update(&request(&[("foo.version", 1, 1)], false), 2, false, 7);
        assert_eq!(r.error_code, ErrorCode::ClusterAuthorizationFailed.code());
        assert_eq!(message(&r), CLUSTER_DENIED);
    }
}
