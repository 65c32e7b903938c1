/* fake_open.h: a broker that lets every connection in, for the unit tests
 * that script the engine's connection with -Wl,--wrap: the socket opens,
 * the login, channel.open and confirm.select succeed, and the closes are
 * answered. A test links fake_open.o and puts $(FAKE_OPEN_WRAPS) in its
 * WRAP_ variable (the Makefile); it scripts the frames itself, and may
 * script the opens with a __wrap_amqp_socket_open_noblock of its own
 * (fake_open.c's is weak). */
#ifndef WARREN_TEST_FAKE_OPEN_H
#define WARREN_TEST_FAKE_OPEN_H

#include <amqp.h>
#include <amqp_framing.h>

int __wrap_amqp_socket_open_noblock(amqp_socket_t *s, const char *host, int port,
                                    const struct timeval *tv);
amqp_rpc_reply_t __wrap_amqp_login_with_properties(amqp_connection_state_t c, const char *vhost,
                                                   int channel_max, int frame_max, int heartbeat,
                                                   const amqp_table_t *props,
                                                   amqp_sasl_method_enum method, ...);
amqp_channel_open_ok_t *__wrap_amqp_channel_open(amqp_connection_state_t c, amqp_channel_t ch);
amqp_confirm_select_ok_t *__wrap_amqp_confirm_select(amqp_connection_state_t c, amqp_channel_t ch);
amqp_rpc_reply_t __wrap_amqp_channel_close(amqp_connection_state_t c, amqp_channel_t ch, int code);
amqp_rpc_reply_t __wrap_amqp_connection_close(amqp_connection_state_t c, int code);

#endif
