//! Flight's session actions: `SetSessionOptions`, `GetSessionOptions`, `CloseSession`.

use super::*;

impl FloeFlightSql {
    /// Flight's `SetSessionOptions`: every option is checked (an unknown name or a bad value
    /// refuses the whole request, naming it), then the new settings go into the caller's
    /// next token.
    pub(super) async fn set_session_options(
        &self,
        body: &[u8],
        caller: &Principal,
        slot: &SettingsSlot,
    ) -> Result<Vec<u8>, Status> {
        let request = wire::SetSessionOptionsRequest::decode(body)
            .map_err(|e| ProtocolError::malformed("not a SetSessionOptionsRequest", e))?;
        let mut options: Vec<_> = request.session_options.into_iter().collect();
        options.sort_by(|a, b| a.0.cmp(&b.0));
        let mut settings = caller.settings.clone();
        for (name, value) in options {
            let value = wire::as_text(&value).map_err(|e| ProtocolError::Malformed {
                what: "a session option's value",
                detail: format!("'{name}': {e}"),
            })?;
            settings = self
                .engine
                .with_setting(&settings, &name, value.as_deref())
                .await?;
        }
        info!(user = %caller.user, settings = ?settings, "session options set");
        slot.put(settings);
        Ok(wire::SetSessionOptionsResult::default().encode_to_vec())
    }
}
