/* commands.h — one entry point per CLI command, each in its own cmd_*.c.
 * argv holds the words after the command name; the return value is the
 * process exit status. */
#ifndef NF_COMMANDS_H
#define NF_COMMANDS_H

#include "protocol.h"

int cmd_generate(int argc, char **argv, NfOut *out);
int cmd_info(int argc, char **argv, NfOut *out);
int cmd_tokenize(int argc, char **argv, NfOut *out);
int cmd_tokenizer_train(int argc, char **argv, NfOut *out);
int cmd_train(int argc, char **argv, NfOut *out);
int cmd_eval(int argc, char **argv, NfOut *out);
int cmd_export(int argc, char **argv, NfOut *out);
int cmd_benchmark(int argc, char **argv, NfOut *out);

#endif
