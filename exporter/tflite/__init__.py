"""The TFLite writer: trace with weights as inputs, convert, write the weights back as
(quantized) constants, and pack the LiteRT-LM bundle."""
