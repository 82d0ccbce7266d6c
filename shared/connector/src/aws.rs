//! The one place the AWS SDK configuration is loaded.

use aws_config::{BehaviorVersion, SdkConfig};

/// Region, credentials and endpoints from the environment, as every AWS SDK reads them; in tests
/// `AWS_ENDPOINT_URL` points the clients at moto.
pub async fn sdk_config() -> SdkConfig {
    aws_config::defaults(BehaviorVersion::latest()).load().await
}
