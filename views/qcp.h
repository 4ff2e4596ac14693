#pragma once
// QCustomPlot's header uses Qt's `signals`/`slots`/`emit`/`foreach` keywords,
// which QT_NO_KEYWORDS removes (they clash with libtorch). Include it through
// this wrapper, which maps them to the Q_ macros for the header only.
#ifndef signals
#define MOEFY_QCP_SIGNALS
#define signals Q_SIGNALS
#endif
#ifndef slots
#define MOEFY_QCP_SLOTS
#define slots Q_SLOTS
#endif
#ifndef emit
#define MOEFY_QCP_EMIT
#define emit Q_EMIT
#endif
#ifndef foreach
#define MOEFY_QCP_FOREACH
#define foreach Q_FOREACH
#endif
#include <qcustomplot.h>
#ifdef MOEFY_QCP_SIGNALS
#undef signals
#undef MOEFY_QCP_SIGNALS
#endif
#ifdef MOEFY_QCP_SLOTS
#undef slots
#undef MOEFY_QCP_SLOTS
#endif
#ifdef MOEFY_QCP_EMIT
#undef emit
#undef MOEFY_QCP_EMIT
#endif
#ifdef MOEFY_QCP_FOREACH
#undef foreach
#undef MOEFY_QCP_FOREACH
#endif
