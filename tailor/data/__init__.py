"""Customer data: the store, its importers (canonical files, UCI, Ta-Feng, Segment), audiences and the
purchase frame."""
