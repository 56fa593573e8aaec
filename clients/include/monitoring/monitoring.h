/*
 * libmonitoring's umbrella header: the client (<monitoring/client.h>) and
 * the typed stubs and message types of every service of the monitord API.
 *
 *   #include <monitoring/monitoring.h>
 *   cc app.c $(pkg-config --cflags --libs monitoring)
 */
#ifndef MONITORING_MONITORING_H
#define MONITORING_MONITORING_H

#include <monitoring/client.h>
#include <monitoring/services.h>

#endif
