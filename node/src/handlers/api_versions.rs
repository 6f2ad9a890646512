//! ApiVersions: every served API with its full version range from the definitions.

use bytes::Bytes;
use spate_net::messages::api_versions_response::ApiVersion;
use spate_net::messages::ApiVersionsResponse;
use spate_net::{ApiKey, ErrorCode};

/// The APIs this broker serves. Anything not listed is neither advertised nor answered.
pub const SERVED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::OffsetCommit,
    ApiKey::OffsetFetch,
    ApiKey::FindCoordinator,
    ApiKey::JoinGroup,
    ApiKey::Heartbeat,
    ApiKey::LeaveGroup,
    ApiKey::SyncGroup,
    ApiKey::DescribeGroups,
    ApiKey::ListGroups,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::InitProducerId,
    ApiKey::AddPartitionsToTxn,
    ApiKey::AddOffsetsToTxn,
    ApiKey::EndTxn,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::DescribeLogDirs,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
];

fn api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = SERVED_APIS
        .iter()
        .map(|k| {
            let (min, max) = k.valid_versions();
            ApiVersion {
                api_key: k.key(),
                min_version: min,
                max_version: max,
            }
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse {
        api_keys: api_keys(),
        ..Default::default()
    }
}

/// An ApiVersions request of a version newer than ours gets UNSUPPORTED_VERSION and
/// our ranges, encoded as version 0 so that any client can read it (its header may be
/// of a format we do not know, so only the fixed prefix is read).
pub fn answer_unknown_version(frame: &Bytes) -> Option<Vec<Bytes>> {
    if frame.len() < 8 {
        return None;
    }
    let api_key = i16::from_be_bytes([frame[0], frame[1]]);
    let version = i16::from_be_bytes([frame[2], frame[3]]);
    if api_key != ApiKey::ApiVersions.key() || version <= ApiKey::ApiVersions.valid_versions().1 {
        return None;
    }
    let correlation_id = i32::from_be_bytes([frame[4], frame[5], frame[6], frame[7]]);
    let body = ApiVersionsResponse {
        error_code: ErrorCode::UnsupportedVersion.code(),
        api_keys: api_keys(),
        ..Default::default()
    };
    Some(spate_net::encode_response_frame(
        correlation_id,
        0,
        &body,
        0,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// README.md's compatibility table lists exactly the served APIs and their ranges.
    #[test]
    fn readme_table_matches_served_apis() {
        let readme = include_str!("../../../README.md");
        let rows: Vec<&str> = readme
            .lines()
            .filter(|l| l.starts_with("| ") && l.matches(" | ").count() >= 2)
            .collect();
        for key in SERVED_APIS {
            let (min, max) = key.valid_versions();
            let range = if min == max {
                min.to_string()
            } else {
                format!("{min}-{max}")
            };
            let row = format!("| {} | {} | {range}", key.name(), key.key());
            assert!(
                rows.iter().any(|r| r.starts_with(&row)),
                "README.md lacks the row `{row}`"
            );
        }
        let listed = rows
            .iter()
            .filter(|r| {
                ApiKey::ALL
                    .iter()
                    .any(|k| r.starts_with(&format!("| {} | {} |", k.name(), k.key())))
            })
            .count();
        assert_eq!(
            listed,
            SERVED_APIS.len(),
            "README.md lists APIs that are not served"
        );
    }
}
