//! The API compatibility table, `docs/api.md`: every API key of the vendored message
//! definitions with the versions Spate serves (from the ApiVersions table) or why it is
//! not served. A test renders it and fails when the committed file differs;
//! `SPATE_REGEN=1` rewrites it.

use spate_net::ApiKey;

use super::SERVED_APIS;

/// What a served API leaves out, if anything.
fn served_note(key: ApiKey) -> &'static str {
    match key {
        ApiKey::FindCoordinator => "group and transaction keys",
        ApiKey::ElectLeaders => {
            "PREFERRED and UNCLEAN, made by the active controller (forwarded from any broker); ALTER on the cluster (docs/failures.md)"
        }
        ApiKey::AlterPartitionReassignments => {
            "made by the active controller (forwarded from any broker); ALTER on the cluster; moves are throttled by Kafka's replication quotas (docs/configuration.md)"
        }
        ApiKey::ListPartitionReassignments => "from the broker's metadata image; DESCRIBE on the cluster",
        ApiKey::ConsumerGroupHeartbeat => {
            "assignors `uniform` and `range`; classic groups convert online both ways, `group.consumer.migration.policy` (docs/compat.md)"
        }
        ApiKey::ShareGroupHeartbeat => {
            "assignor `simple`; only share-partitions whose state the share coordinator initialized are assigned (docs/share-groups.md)"
        }
        ApiKey::DescribeShareGroupOffsets => {
            "start offsets through the share coordinator (ReadShareGroupStateSummary); v1's lag from the high watermark, as Kafka"
        }
        ApiKey::AlterShareGroupOffsets | ApiKey::DeleteShareGroupOffsets => {
            "only while the share group has no members (NON_EMPTY_GROUP), through the share coordinator"
        }
        ApiKey::EndTxn => "transaction versions 1 and 2 (v5+: KIP-890's epoch bump per transaction)",
        ApiKey::Produce => {
            "v12+: transaction version 2 (the partition joins the transaction on its first write)"
        }
        ApiKey::WriteTxnMarkers => {
            "sent by transaction coordinators on other brokers; no coordinator epoch check yet"
        }
        ApiKey::DescribeAcls | ApiKey::CreateAcls | ApiKey::DeleteAcls => {
            "with `[authorizer] enable = false` (the default): SECURITY_DISABLED (54), as Kafka without an authorizer"
        }
        ApiKey::DescribeConfigs => {
            "topics, the broker, the cluster default and groups (the `consumer.*` and `share.*` group configs); other resource types answer INVALID_REQUEST (42)"
        }
        ApiKey::IncrementalAlterConfigs | ApiKey::AlterConfigs => {
            "topics, the broker and the cluster default (the dynamic broker configs of configuration.md), groups (`consumer.session.timeout.ms`, `consumer.heartbeat.interval.ms`, the `share.*` configs of docs/share-groups.md); other resource types answer INVALID_REQUEST (42)"
        }
        ApiKey::SaslHandshake => "mechanisms PLAIN, SCRAM-SHA-256, SCRAM-SHA-512 and OAUTHBEARER (JWTs checked against a JWK Set) on SASL_PLAINTEXT and SASL_SSL listeners (docs/security.md); v0 is followed by bare tokens; on an authenticated connection with a session lifetime it begins a re-authentication (KIP-368)",
        ApiKey::SaslAuthenticate => "`session_lifetime_ms`: the shorter of `connections_max_reauth_ms` and the OAUTHBEARER token's remaining lifetime (0: neither); re-authentication keeps the mechanism and the principal; SCRAM's `tokenauth` refused (no delegation tokens)",
        ApiKey::DescribeClientQuotas => "from the metadata image, Kafka's filter rules (docs/security.md#quotas)",
        ApiKey::AlterClientQuotas => "made by the active controller, as ClientQuotaRecord in the metadata log; `producer_byte_rate`, `consumer_byte_rate`, `request_percentage`, `controller_mutation_rate` and `connection_creation_rate` are enforced",
        ApiKey::AlterUserScramCredentials => "made by the active controller (forwarded from any broker), as UserScramCredentialRecord in the metadata log",
        ApiKey::DescribeQuorum => {
            "any broker answers for the active controller; offsets are the quorum log's index + 1; a voter's last fetch time is not known (-1), an observer's is its last heartbeat"
        }
        ApiKey::InitializeShareGroupState
        | ApiKey::ReadShareGroupState
        | ApiKey::WriteShareGroupState
        | ApiKey::DeleteShareGroupState
        | ApiKey::ReadShareGroupStateSummary => {
            "between brokers (KIP-932's share coordinator, docs/share-groups.md); CLUSTER_ACTION on the cluster"
        }
        ApiKey::DescribeLogDirs => "every log directory (`log_dirs`); an offline one with KAFKA_STORAGE_ERROR; a partition moving between them also as a future replica (IsFutureKey) in its destination",
        ApiKey::AlterReplicaLogDirs => {
            "moves a replica between this broker's log dirs in the background (a future log that catches up, then a crash-safe swap; docs/failures.md); ALTER on the cluster; throttled by `replica.alter.log.dirs.io.max.bytes.per.second`"
        }
        ApiKey::ListConfigResources => {
            "groups with configs, the broker and its loggers, topics, in Kafka's order; there are no client-metrics subscriptions to list"
        }
        ApiKey::CreateDelegationToken
        | ApiKey::RenewDelegationToken
        | ApiKey::ExpireDelegationToken
        | ApiKey::DescribeDelegationToken => {
            "refused as Kafka refuses them without `delegation.token.secret.key`: DELEGATION_TOKEN_REQUEST_NOT_ALLOWED (64) on PLAINTEXT and TLS without a client certificate, else DELEGATION_TOKEN_AUTH_DISABLED (61) (docs/security.md)"
        }
        ApiKey::UpdateFeatures => {
            "each feature is supported at its finalized level only (`metadata.version` 25, `transaction.version` 2): that level succeeds unchanged, others answer INVALID_UPDATE_VERSION (95) with Kafka's message; ALTER on the cluster"
        }
        _ => "",
    }
}

const CONTROLLER: &str =
    "KRaft controller or inter-broker API: Kafka's broker listener does not serve it either";

/// Why an API is not served.
fn unserved_reason(key: ApiKey) -> &'static str {
    use ApiKey::*;
    match key {
        LeaderAndIsr
        | StopReplica
        | UpdateMetadata
        | ControlledShutdown
        | Vote
        | BeginQuorumEpoch
        | EndQuorumEpoch
        | AlterPartition
        | Envelope
        | FetchSnapshot
        | BrokerRegistration
        | BrokerHeartbeat
        | UnregisterBroker
        | AllocateProducerIds
        | ControllerRegistration
        | AssignReplicasToDirs
        | AddRaftVoter
        | RemoveRaftVoter
        | UpdateRaftVoter => CONTROLLER,
        GetTelemetrySubscriptions | PushTelemetry => {
            "client telemetry (KIP-714) is not implemented"
        }
        _ => "",
    }
}

pub fn render() -> String {
    let mut out = String::from(
        "# Kafka API compatibility\n\n\
         Generated from the code by `cargo test -p spate-node api_table` (`SPATE_REGEN=1` rewrites\n\
         it): every API key of Kafka's message definitions vendored in `net/kafka-protocol/`, with\n\
         the versions Spate advertises in ApiVersions and serves, or why it does not serve it.\n\n\
         An API that is not served is not advertised, and a request for it closes the\n\
         connection, as Kafka closes it for an API its listener does not serve; clients check\n\
         ApiVersions first and report the API as unsupported (the Java client throws\n\
         `UnsupportedVersionException`). The same happens for a served API at a version\n\
         outside its range, and for API keys without vendored definitions (88 and 89, the\n\
         KIP-1071 streams groups, and 93 and up). ApiVersions itself at a newer version is answered\n\
         with UNSUPPORTED_VERSION (35) and the served ranges.\n\n\
         | API | key | Spate | notes |\n|---|---|---|---|\n",
    );
    for key in ApiKey::ALL {
        let (versions, note) = if SERVED_APIS.contains(key) {
            let (min, max) = key.valid_versions();
            let range = if min == max {
                min.to_string()
            } else {
                format!("{min}-{max}")
            };
            (range, served_note(*key))
        } else {
            ("not served".to_string(), unserved_reason(*key))
        };
        out.push_str(&format!(
            "| {} | {} | {versions} | {note} |\n",
            key.name(),
            key.key()
        ));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_unserved_api_has_a_reason() {
        for key in ApiKey::ALL {
            if !SERVED_APIS.contains(key) {
                assert!(
                    !unserved_reason(*key).is_empty(),
                    "{} needs a reason",
                    key.name()
                );
            }
        }
    }

    #[test]
    fn api_table_doc_is_current() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../docs/api.md");
        let table = render();
        if std::env::var_os("SPATE_REGEN").is_some() {
            std::fs::write(path, &table).unwrap();
        }
        let committed = std::fs::read_to_string(path).unwrap_or_default();
        assert!(
            committed == table,
            "docs/api.md is not current: run `SPATE_REGEN=1 cargo test -p spate-node api_table`"
        );
    }
}
