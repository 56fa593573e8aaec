/* Alert rules as stored and as shown (alerts/rule.h): being written. */
#include "alerts/rule.h"
