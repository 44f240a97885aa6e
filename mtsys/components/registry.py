"""Component kinds by name, so a stored `ComponentSpec(kind, config_json)` can be rebuilt.

A module-private dict as in Model Garden's `core/registry.py`. Kinds are registered when
`mtsys.components` is imported (importing this module imports the package first).
"""

_REGISTRY = {}


def register(kind):
  """Class decorator registering a layer class under `kind` and setting its `kind` attribute.

  Raises:
    ValueError: if `kind` is not a non-empty string or is already registered.
  """
  if not isinstance(kind, str) or not kind:
    raise ValueError(
        "Invalid value received for argument `kind`. "
        f"Expected a non-empty string. Received: kind={kind!r}"
    )

  def decorator(cls):
    if kind in _REGISTRY:
      other = _REGISTRY[kind]
      raise ValueError(
          f"Component kind '{kind}' is already registered by "
          f"{other.__module__}.{other.__qualname__}."
      )
    cls.kind = kind
    _REGISTRY[kind] = cls
    return cls

  return decorator


def get(kind):
  """The layer class registered under `kind`."""
  try:
    return _REGISTRY[kind]
  except (KeyError, TypeError):
    raise ValueError(f"Unknown component kind {kind!r}; expected one of {kinds()}") from None


def kinds():
  """All registered kinds, sorted."""
  return sorted(_REGISTRY)


def from_config(kind, config):
  """A new, unbuilt layer of `kind` from its `get_config()` dict."""
  return get(kind).from_config(dict(config))
