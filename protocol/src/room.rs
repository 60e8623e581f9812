use crate::ErrorCode;

/// The longest room name accepted, in bytes of UTF-8.
pub const MAX_ROOM_BYTES: usize = 200;

/// Checks a room name: 1 to [`MAX_ROOM_BYTES`] bytes of UTF-8 with no control characters.
///
/// Control characters are refused because room names end up in logs, metrics labels and admin
/// URLs, where a stray newline or escape sequence does harm.
pub fn validate_room(room: &str) -> Result<(), (ErrorCode, &'static str)> {
    if room.is_empty() {
        return Err((ErrorCode::InvalidRoom, "room name is empty"));
    }
    if room.len() > MAX_ROOM_BYTES {
        return Err((ErrorCode::InvalidRoom, "room name is longer than 200 bytes"));
    }
    if room.chars().any(char::is_control) {
        return Err((
            ErrorCode::InvalidRoom,
            "room name contains a control character",
        ));
    }
    Ok(())
}
