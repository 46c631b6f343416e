//go:build !linux

package httpapi

import "errors"

func setCork(fd uintptr, on int) error { return errors.ErrUnsupported }
