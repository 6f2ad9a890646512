//! Confluent's REST errors: an HTTP status and a body `{"error_code":..,"message":..}`.

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub status: u16,
    pub code: i32,
    pub message: String,
}

impl ApiError {
    pub fn new(status: u16, code: i32, message: impl Into<String>) -> ApiError {
        ApiError {
            status,
            code,
            message: message.into(),
        }
    }

    pub fn body(&self) -> String {
        serde_json::json!({"error_code": self.code, "message": self.message}).to_string()
    }

    pub fn subject_not_found(subject: &str) -> ApiError {
        ApiError::new(404, 40401, format!("Subject '{subject}' not found."))
    }

    pub fn version_not_found(version: &str) -> ApiError {
        ApiError::new(404, 40402, format!("Version {version} not found."))
    }

    pub fn schema_not_found() -> ApiError {
        ApiError::new(404, 40403, "Schema not found")
    }

    pub fn schema_id_not_found(id: i64) -> ApiError {
        ApiError::new(404, 40403, format!("Schema {id} not found"))
    }

    pub fn subject_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(
            404,
            40404,
            format!(
                "Subject '{subject}' was soft deleted. Set permanent=true to delete permanently"
            ),
        )
    }

    pub fn subject_not_soft_deleted(subject: &str) -> ApiError {
        ApiError::new(
            404,
            40405,
            format!("Subject '{subject}' was not deleted first before being permanently deleted"),
        )
    }

    pub fn version_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(
            404,
            40406,
            format!(
                "Subject '{subject}' Version {version} was soft deleted. Set permanent=true to delete permanently"
            ),
        )
    }

    pub fn version_not_soft_deleted(subject: &str, version: i32) -> ApiError {
        ApiError::new(
            404,
            40407,
            format!(
                "Subject '{subject}' Version {version} was not deleted first before being permanently deleted"
            ),
        )
    }

    pub fn no_subject_config(subject: &str) -> ApiError {
        ApiError::new(
            404,
            40408,
            format!("Subject '{subject}' does not have subject-level compatibility configured"),
        )
    }

    pub fn no_subject_mode(subject: &str) -> ApiError {
        ApiError::new(
            404,
            40409,
            format!("Subject '{subject}' does not have subject-level mode configured"),
        )
    }

    /// HTTP 409 with error code 409, as Confluent's API reference documents it.
    pub fn incompatible(messages: &[String]) -> ApiError {
        ApiError::new(
            409,
            409,
            format!(
                "Schema being registered is incompatible with an earlier schema for subject; details: {}",
                serde_json::to_string(messages).unwrap_or_default()
            ),
        )
    }

    pub fn invalid_schema(message: impl Into<String>) -> ApiError {
        ApiError::new(422, 42201, message)
    }

    pub fn invalid_version(version: &str) -> ApiError {
        ApiError::new(
            422,
            42202,
            format!(
                "The specified version '{version}' is not a valid version id. Allowed values are between [1, 2^31-1] and the string \"latest\""
            ),
        )
    }

    pub fn invalid_compatibility() -> ApiError {
        ApiError::new(
            422,
            42203,
            "Invalid compatibility level. Valid values are none, backward, forward, full, backward_transitive, forward_transitive, and full_transitive",
        )
    }

    pub fn invalid_mode() -> ApiError {
        ApiError::new(
            422,
            42204,
            "Invalid mode. Valid values are READWRITE, READONLY, READONLY_OVERRIDE, IMPORT",
        )
    }

    pub fn not_permitted(message: impl Into<String>) -> ApiError {
        ApiError::new(422, 42205, message)
    }

    pub fn reference_exists(message: impl Into<String>) -> ApiError {
        ApiError::new(422, 42206, message)
    }

    pub fn id_does_not_match(message: impl Into<String>) -> ApiError {
        ApiError::new(422, 42207, message)
    }

    pub fn invalid_subject(subject: &str) -> ApiError {
        ApiError::new(
            422,
            42208,
            format!("The specified subject '{subject}' is not a valid subject"),
        )
    }

    pub fn schema_too_large(message: impl Into<String>) -> ApiError {
        ApiError::new(422, 42209, message)
    }

    pub fn store(message: impl Into<String>) -> ApiError {
        ApiError::new(500, 50001, message)
    }

    pub fn timeout(message: impl Into<String>) -> ApiError {
        ApiError::new(500, 50002, message)
    }
}
