//! What the controller's and violind's OpenAPI documents share: the bearer-token scheme
//! and the 401 every operation that needs it can answer.
use utoipa::{
    openapi::{
        security::{HttpAuthScheme, HttpBuilder, SecurityScheme},
        ContentBuilder, OpenApi, Ref, RefOr, Response, ResponseBuilder,
    },
    Modify,
};

/// Declares the `bearer` scheme and adds the 401 answer to every operation that does
/// not declare its own security (the open ones say `security(())`).
pub struct Bearer;

impl Modify for Bearer {
    fn modify(&self, doc: &mut OpenApi) {
        let components = doc.components.get_or_insert_with(Default::default);
        components.add_security_scheme(
            "bearer",
            SecurityScheme::Http(HttpBuilder::new().scheme(HttpAuthScheme::Bearer).build()),
        );
        let unauthorised: RefOr<Response> = ResponseBuilder::new()
            .description("Missing or wrong bearer token")
            .content(
                "application/json",
                ContentBuilder::new()
                    .schema(Some(Ref::from_schema_name("ErrorBody")))
                    .build(),
            )
            .build()
            .into();
        for item in doc.paths.paths.values_mut() {
            for op in [
                &mut item.get,
                &mut item.put,
                &mut item.post,
                &mut item.delete,
            ]
            .into_iter()
            .flatten()
            .filter(|op| op.security.is_none())
            {
                op.responses
                    .responses
                    .insert("401".into(), unauthorised.clone());
            }
        }
    }
}

/// Checks a checked-in document against the generated one; with `VIOLIN_WRITE_OPENAPI`
/// set, rewrites the file instead. For the crates' tests.
pub fn check_file(path: &str, generated: &utoipa::openapi::OpenApi, how: &str) {
    let text = generated.to_pretty_json().expect("the document serialises") + "\n";
    if std::env::var_os("VIOLIN_WRITE_OPENAPI").is_some() {
        std::fs::write(path, &text).expect("writing the OpenAPI file");
    }
    let file = std::fs::read_to_string(path).unwrap_or_default();
    assert!(
        file == text,
        "{path} is not the document the handlers describe; regenerate it with {how}"
    );
}
