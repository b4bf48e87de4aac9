"""One module per command; each is options -> config -> analysis -> render -> emit."""
