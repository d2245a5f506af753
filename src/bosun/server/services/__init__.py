"""One module per ClearML service; each exposes ACTIONS: action name -> handler."""
