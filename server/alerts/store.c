/* The alert store (alerts/store.h): being written. */
#include "alerts/store.h"
