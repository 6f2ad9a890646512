//! DescribeClientQuotas. Spate has no client quotas, so every filter matches nothing:
//! the answer a Kafka broker gives when none are configured. kafka-configs.sh
//! describes quotas before SCRAM credentials (`--describe --entity-type users`), and
//! would fail if the API were not served.

use spate_net::messages::DescribeClientQuotasResponse;

pub fn describe_client_quotas() -> DescribeClientQuotasResponse {
    DescribeClientQuotasResponse {
        entries: Some(Vec::new()),
        ..Default::default()
    }
}
