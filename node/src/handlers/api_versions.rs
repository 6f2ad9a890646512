//! ApiVersions: every served API with its full version range from the definitions.

use bytes::Bytes;
use spate_net::messages::api_versions_response::ApiVersion;
use spate_net::messages::{ApiVersionsResponse, RequestHeader};
use spate_net::{ApiKey, ErrorCode};

/// The APIs this broker serves. Anything not listed is neither advertised nor answered.
pub const SERVED_APIS: &[ApiKey] = &[
    ApiKey::Produce,
    ApiKey::Fetch,
    ApiKey::ListOffsets,
    ApiKey::Metadata,
    ApiKey::ApiVersions,
    ApiKey::CreateTopics,
    ApiKey::DeleteTopics,
    ApiKey::DeleteRecords,
    ApiKey::OffsetForLeaderEpoch,
    ApiKey::InitProducerId,
    ApiKey::DescribeConfigs,
    ApiKey::AlterConfigs,
    ApiKey::DescribeLogDirs,
    ApiKey::CreatePartitions,
    ApiKey::IncrementalAlterConfigs,
    ApiKey::DescribeCluster,
];

fn api_keys() -> Vec<ApiVersion> {
    let mut keys: Vec<ApiVersion> = SERVED_APIS
        .iter()
        .map(|k| {
            let (min, max) = k.valid_versions();
            ApiVersion { api_key: k.key(), min_version: min, max_version: max }
        })
        .collect();
    keys.sort_by_key(|k| k.api_key);
    keys
}

pub fn handle() -> ApiVersionsResponse {
    ApiVersionsResponse { api_keys: api_keys(), ..Default::default() }
}

/// The answer to an ApiVersions request of a version we do not know: error 35 and our
/// ranges, encoded as version 0 so that any client can read it.
pub fn unsupported_version(header: &RequestHeader) -> Vec<Bytes> {
    let body = ApiVersionsResponse {
        error_code: ErrorCode::UnsupportedVersion.code(),
        api_keys: api_keys(),
        ..Default::default()
    };
    spate_net::encode_response_frame(header.correlation_id, 0, &body, 0)
}
