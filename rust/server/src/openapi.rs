//! The OpenAPI document at `/api/v1/openapi.json`: each service contributes its own part.

use utoipa::OpenApi;

#[derive(OpenApi)]
#[openapi(
    info(
        title = "AeThex Cloud API",
        description = "Accounts, cloud saves and the other AeThex Cloud services. Player requests carry `X-AeThex-Key` and `Authorization: Bearer <access token>`; a game's servers use `Authorization: ServerKey <key>`."
    ),
    components(schemas(
        aethex_protocol::ErrorEnvelope,
        aethex_protocol::ApiErrorBody,
        aethex_protocol::ErrorCode
    ))
)]
struct CoreApi;

pub fn document() -> utoipa::openapi::OpenApi {
    let mut doc = CoreApi::openapi();
    doc.merge(crate::auth::AuthApi::openapi());
    doc.merge(crate::saves::SavesApi::openapi());
    doc.merge(crate::social::SocialApi::openapi());
    doc
}
