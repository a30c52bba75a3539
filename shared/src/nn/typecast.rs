//! Moving a tensor between a generic backend `B` and the concrete backend it is (flex, autodiff
//! of flex, a GPU backend), where nvnet has a kernel of its own for that backend.

use std::any::Any;

/// Move a value to another type when the two are the same type (a checked, safe cast).
pub(crate) fn cast<T: 'static, U: 'static>(value: T) -> Result<U, T> {
    let mut slot = Some(value);
    match (&mut slot as &mut dyn Any).downcast_mut::<Option<U>>() {
        Some(u) => Ok(u.take().expect("just filled")),
        None => Err(slot.expect("untouched")),
    }
}

/// `cast` between types known to be the same (a parameter of the module whose input was cast).
pub(crate) fn same<T: 'static, U: 'static>(value: T) -> U {
    match cast(value) {
        Ok(u) => u,
        Err(_) => unreachable!(
            "{} is not {}",
            std::any::type_name::<T>(),
            std::any::type_name::<U>()
        ),
    }
}
