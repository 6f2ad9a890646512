//! ApiVersions: every served API with its full version range from the definitions.

use bytes::Bytes;
use spate_net::messages::api_versions_response::{
    ApiVersion, FinalizedFeatureKey, SupportedFeatureKey,
};
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
    ApiKey::WriteTxnMarkers,
    ApiKey::TxnOffsetCommit,
    ApiKey::DescribeProducers,
    ApiKey::DescribeTransactions,
    ApiKey::ListTransactions,
    ApiKey::SaslHandshake,
    ApiKey::SaslAuthenticate,
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

/// Kafka's `transaction.version` feature: level 2 is KIP-890's transaction protocol
/// (EndTxn bumps the epoch; partition leaders add partitions to transactions). Clients
/// use it when it is finalized, as on a Kafka 4 cluster.
const TRANSACTION_VERSION: &str = "transaction.version";
const TRANSACTION_VERSION_LEVEL: i16 = 2;
/// Features never change on a Spate node, so their epoch does not either.
const FEATURES_EPOCH: i64 = 1;

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse {
        api_keys: api_keys(),
        supported_features: vec![SupportedFeatureKey {
            name: TRANSACTION_VERSION.into(),
            min_version: 0,
            max_version: TRANSACTION_VERSION_LEVEL,
        }],
        finalized_features_epoch: FEATURES_EPOCH,
        finalized_features: vec![FinalizedFeatureKey {
            name: TRANSACTION_VERSION.into(),
            min_version_level: TRANSACTION_VERSION_LEVEL,
            max_version_level: TRANSACTION_VERSION_LEVEL,
        }],
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
