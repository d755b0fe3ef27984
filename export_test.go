package pgnotify

// Test seams for the external tests, compiled into tests only.

// SetTestServer hands the internal tests the server TestMain provides.
func SetTestServer(url string) { testServerURL = url }
