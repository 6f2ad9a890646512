//! ApiVersions: every served API with its full version range from the definitions.

use bytes::Bytes;
use spate_net::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
use spate_net::messages::ApiVersionsResponse;
use spate_net::{ApiKey, ErrorCode};

use crate::metadata::records::{METADATA_VERSION, METADATA_VERSION_FEATURE};

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
    ApiKey::WriteTxnMarkers,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
    ApiKey::CreateDelegationToken,
    ApiKey::RenewDelegationToken,
    ApiKey::ExpireDelegationToken,
    ApiKey::DescribeDelegationToken,
    ApiKey::DescribeAcls,
    ApiKey::CreateAcls,
    ApiKey::DeleteAcls,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::AlterReplicaLogDirs,
    ApiKey::DescribeLogDirs,
    ApiKey::CreatePartitions,
    ApiKey::AlterPartitionReassignments,
    ApiKey::ListPartitionReassignments,
    ApiKey::ElectLeaders,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
    ApiKey::DescribeQuorum,
    ApiKey::DescribeClientQuotas,
    ApiKey::AlterClientQuotas,
    ApiKey::DescribeUserScramCredentials,
    ApiKey::UpdateFeatures,
    ApiKey::AlterUserScramCredentials,
    ApiKey::DeleteGroups,
    ApiKey::OffsetDelete,
    ApiKey::ListConfigResources,
    ApiKey::DescribeTopicPartitions,
    ApiKey::ConsumerGroupHeartbeat,
    ApiKey::ConsumerGroupDescribe,
    ApiKey::ShareFetch,
    ApiKey::ShareAcknowledge,
    ApiKey::InitializeShareGroupState,
    ApiKey::ReadShareGroupState,
    ApiKey::WriteShareGroupState,
    ApiKey::DeleteShareGroupState,
    ApiKey::ReadShareGroupStateSummary,
    ApiKey::ShareGroupHeartbeat,
    ApiKey::ShareGroupDescribe,
    ApiKey::DescribeShareGroupOffsets,
    ApiKey::AlterShareGroupOffsets,
    ApiKey::DeleteShareGroupOffsets,
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

/// The features this node runs, each at the one level it supports (so the supported
/// range is that level alone, and UpdateFeatures can only confirm it):
/// `metadata.version` is the level of the records Spate writes; `transaction.version`
/// 2 is KIP-890's transaction protocol (EndTxn bumps the epoch; partition leaders add
/// partitions to transactions), which clients use when it is finalized, as on a Kafka 4
/// cluster (requests of clients on version 1 are served too).
pub const FEATURES: &[(&str, i16)] = &[
    (METADATA_VERSION_FEATURE, METADATA_VERSION),
    ("transaction.version", 2),
];
/// Features never change on a Spate node, so their epoch does not either.
const FEATURES_EPOCH: i64 = 1;

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse {
        api_keys: api_keys(),
        supported_features: FEATURES
            .iter()
            .map(|&(name, level)| SupportedFeatureKey {
                name: name.into(),
                min_version: level,
                max_version: level,
            })
            .collect(),
        finalized_features_epoch: FEATURES_EPOCH,
        finalized_features: FEATURES
            .iter()
            .map(|&(name, level)| FinalizedFeatureKey {
                name: name.into(),
                min_version_level: level,
                max_version_level: level,
            })
            .collect(),
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
