"""One router per audience of the HTTP service; ``tailor.app.http.create_app`` includes them."""
