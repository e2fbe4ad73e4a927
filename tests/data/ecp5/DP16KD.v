// Simulation model of the ECP5 block RAM DP16KD, for the configurations yosys's memory
// mapping gives (techlibs/lattice/brams_map_16kd.v) and convgen.bram then changes:
//   * true dual port, DATA_WIDTH_A = DATA_WIDTH_B = 18: 1024 words of 18 bits; AD*[13:4]
//     address a word, AD*[1:0] enable its two 9-bit bytes on a write;
//   * true dual port, DATA_WIDTH_A = DATA_WIDTH_B = 9, read only (a ROM): 2048 words of 9
//     bits; AD*[13:3] address a word, byte AD*[3] of the 18-bit word AD*[13:4];
//   * pseudo dual port, DATA_WIDTH_A = DATA_WIDTH_B = 36: port A writes, port B reads
//     512 words of 36 bits, {DIB, DIA} and {DOB, DOA}; AD*[13:5] address a word, ADA[3:0]
//     enable its four 9-bit bytes.
// REGMODE_x NOREG: DOx is the read register (loaded at a clock edge with CEx and no write
// on that port). OUTREG: DOx is the output register, loaded from the read register at a
// clock edge with OCEx. Written from Lattice's description of the block (FPGA-TN-02204,
// "ECP5 and ECP5-5G Memory Usage Guide"); yosys ships DP16KD as a black box only.
// Initial contents (INITVAL_*) are loaded as described below. Not modelled, and refused:
// other widths, chip-select decoding, resets in use, inverted clocks. Reads of a RAM (all
// INITVAL_* zero) start as x. A read of a word written in the same cycle by the other port
// gives x: neither the block's description nor the generic RTL's non-transparent port is
// relied on.
`timescale 1ns / 1ps
module DP16KD (
  input DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0,
  input ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0,
  input CEA, OCEA, CLKA, WEA, RSTA,
  input CSA2, CSA1, CSA0,
  output DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0,
  input DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0,
  input ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0,
  input CEB, OCEB, CLKB, WEB, RSTB,
  input CSB2, CSB1, CSB0,
  output DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0
);
  parameter DATA_WIDTH_A = 18;
  parameter DATA_WIDTH_B = 18;
  parameter REGMODE_A = "NOREG";
  parameter REGMODE_B = "NOREG";
  parameter RESETMODE = "SYNC";
  parameter ASYNC_RESET_RELEASE = "SYNC";
  parameter CSDECODE_A = "0b000";
  parameter CSDECODE_B = "0b000";
  parameter WRITEMODE_A = "NORMAL";
  parameter WRITEMODE_B = "NORMAL";
  parameter CLKAMUX = "CLKA";
  parameter CLKBMUX = "CLKB";
  parameter GSR = "ENABLED";
  parameter INIT_DATA = "STATIC";
  parameter WID = 0;
  parameter [319:0] INITVAL_00 = 320'h0;
  parameter [319:0] INITVAL_01 = 320'h0;
  parameter [319:0] INITVAL_02 = 320'h0;
  parameter [319:0] INITVAL_03 = 320'h0;
  parameter [319:0] INITVAL_04 = 320'h0;
  parameter [319:0] INITVAL_05 = 320'h0;
  parameter [319:0] INITVAL_06 = 320'h0;
  parameter [319:0] INITVAL_07 = 320'h0;
  parameter [319:0] INITVAL_08 = 320'h0;
  parameter [319:0] INITVAL_09 = 320'h0;
  parameter [319:0] INITVAL_0A = 320'h0;
  parameter [319:0] INITVAL_0B = 320'h0;
  parameter [319:0] INITVAL_0C = 320'h0;
  parameter [319:0] INITVAL_0D = 320'h0;
  parameter [319:0] INITVAL_0E = 320'h0;
  parameter [319:0] INITVAL_0F = 320'h0;
  parameter [319:0] INITVAL_10 = 320'h0;
  parameter [319:0] INITVAL_11 = 320'h0;
  parameter [319:0] INITVAL_12 = 320'h0;
  parameter [319:0] INITVAL_13 = 320'h0;
  parameter [319:0] INITVAL_14 = 320'h0;
  parameter [319:0] INITVAL_15 = 320'h0;
  parameter [319:0] INITVAL_16 = 320'h0;
  parameter [319:0] INITVAL_17 = 320'h0;
  parameter [319:0] INITVAL_18 = 320'h0;
  parameter [319:0] INITVAL_19 = 320'h0;
  parameter [319:0] INITVAL_1A = 320'h0;
  parameter [319:0] INITVAL_1B = 320'h0;
  parameter [319:0] INITVAL_1C = 320'h0;
  parameter [319:0] INITVAL_1D = 320'h0;
  parameter [319:0] INITVAL_1E = 320'h0;
  parameter [319:0] INITVAL_1F = 320'h0;
  parameter [319:0] INITVAL_20 = 320'h0;
  parameter [319:0] INITVAL_21 = 320'h0;
  parameter [319:0] INITVAL_22 = 320'h0;
  parameter [319:0] INITVAL_23 = 320'h0;
  parameter [319:0] INITVAL_24 = 320'h0;
  parameter [319:0] INITVAL_25 = 320'h0;
  parameter [319:0] INITVAL_26 = 320'h0;
  parameter [319:0] INITVAL_27 = 320'h0;
  parameter [319:0] INITVAL_28 = 320'h0;
  parameter [319:0] INITVAL_29 = 320'h0;
  parameter [319:0] INITVAL_2A = 320'h0;
  parameter [319:0] INITVAL_2B = 320'h0;
  parameter [319:0] INITVAL_2C = 320'h0;
  parameter [319:0] INITVAL_2D = 320'h0;
  parameter [319:0] INITVAL_2E = 320'h0;
  parameter [319:0] INITVAL_2F = 320'h0;
  parameter [319:0] INITVAL_30 = 320'h0;
  parameter [319:0] INITVAL_31 = 320'h0;
  parameter [319:0] INITVAL_32 = 320'h0;
  parameter [319:0] INITVAL_33 = 320'h0;
  parameter [319:0] INITVAL_34 = 320'h0;
  parameter [319:0] INITVAL_35 = 320'h0;
  parameter [319:0] INITVAL_36 = 320'h0;
  parameter [319:0] INITVAL_37 = 320'h0;
  parameter [319:0] INITVAL_38 = 320'h0;
  parameter [319:0] INITVAL_39 = 320'h0;
  parameter [319:0] INITVAL_3A = 320'h0;
  parameter [319:0] INITVAL_3B = 320'h0;
  parameter [319:0] INITVAL_3C = 320'h0;
  parameter [319:0] INITVAL_3D = 320'h0;
  parameter [319:0] INITVAL_3E = 320'h0;
  parameter [319:0] INITVAL_3F = 320'h0;

  wire [17:0] dia = {DIA17, DIA16, DIA15, DIA14, DIA13, DIA12, DIA11, DIA10, DIA9, DIA8, DIA7, DIA6, DIA5, DIA4, DIA3, DIA2, DIA1, DIA0};
  wire [17:0] dib = {DIB17, DIB16, DIB15, DIB14, DIB13, DIB12, DIB11, DIB10, DIB9, DIB8, DIB7, DIB6, DIB5, DIB4, DIB3, DIB2, DIB1, DIB0};
  wire [13:0] ada = {ADA13, ADA12, ADA11, ADA10, ADA9, ADA8, ADA7, ADA6, ADA5, ADA4, ADA3, ADA2, ADA1, ADA0};
  wire [13:0] adb = {ADB13, ADB12, ADB11, ADB10, ADB9, ADB8, ADB7, ADB6, ADB5, ADB4, ADB3, ADB2, ADB1, ADB0};
  localparam PDP = DATA_WIDTH_A == 36;

  reg [35:0] mem [0:1023];        // 18-bit words in [17:0]; 36-bit words at 0..511
  // The initial contents: 1024 18-bit words, 16 per INITVAL_xx in 20-bit slots (bits [17:0]
  // of each slot), word j in INITVAL_(j/16) slot j%16; in the 36-bit mode word w is
  // {word 2w+1 (DOB), word 2w (DOA)}. This is the packing yosys's memory mapping writes
  // (techlibs/lattice/brams_map_16kd.v, init_slice). All zero: the memory is a RAM and its
  // words start as x, so a read of a word never written shows.
  localparam [64 * 320 - 1:0] INITVALS = {
    INITVAL_3F, INITVAL_3E, INITVAL_3D, INITVAL_3C, INITVAL_3B, INITVAL_3A, INITVAL_39, INITVAL_38, INITVAL_37,
    INITVAL_36, INITVAL_35, INITVAL_34, INITVAL_33, INITVAL_32, INITVAL_31, INITVAL_30, INITVAL_2F, INITVAL_2E,
    INITVAL_2D, INITVAL_2C, INITVAL_2B, INITVAL_2A, INITVAL_29, INITVAL_28, INITVAL_27, INITVAL_26, INITVAL_25,
    INITVAL_24, INITVAL_23, INITVAL_22, INITVAL_21, INITVAL_20, INITVAL_1F, INITVAL_1E, INITVAL_1D, INITVAL_1C,
    INITVAL_1B, INITVAL_1A, INITVAL_19, INITVAL_18, INITVAL_17, INITVAL_16, INITVAL_15, INITVAL_14, INITVAL_13,
    INITVAL_12, INITVAL_11, INITVAL_10, INITVAL_0F, INITVAL_0E, INITVAL_0D, INITVAL_0C, INITVAL_0B, INITVAL_0A,
    INITVAL_09, INITVAL_08, INITVAL_07, INITVAL_06, INITVAL_05, INITVAL_04, INITVAL_03, INITVAL_02, INITVAL_01,
    INITVAL_00};
  integer word;
  initial
    if (INITVALS != 0)
      for (word = 0; word < 1024; word = word + 1)
        if (PDP) mem[word / 2][18 * (word % 2) +: 18] = INITVALS[320 * (word / 16) + 20 * (word % 16) +: 18];
        else mem[word] = {18'b0, INITVALS[320 * (word / 16) + 20 * (word % 16) +: 18]};
  reg [17:0] read_a, read_b, out_a, out_b;
  reg [35:0] read_w, out_w;

  initial begin
    if (!((DATA_WIDTH_A == 18 && DATA_WIDTH_B == 18) || (DATA_WIDTH_A == 36 && DATA_WIDTH_B == 36) ||
          (DATA_WIDTH_A == 9 && DATA_WIDTH_B == 9)))
      $fatal(1, "DP16KD model: DATA_WIDTH_A %0d / DATA_WIDTH_B %0d not modelled", DATA_WIDTH_A, DATA_WIDTH_B);
    if (CSDECODE_A != "0b000" || CSDECODE_B != "0b000" || CLKAMUX != "CLKA" || CLKBMUX != "CLKB")
      $fatal(1, "DP16KD model: chip-select decoding or clock inversion not modelled");
  end
  always @* if ((RSTA !== 1'b0 || RSTB !== 1'b0) && $time > 0)
    $fatal(1, "DP16KD model: RSTA/RSTB in use, not modelled");

  function [35:0] merge_bytes(input [35:0] old_word, input [35:0] new_word, input [3:0] enable);
    integer k;
    begin
      merge_bytes = old_word;
      for (k = 0; k < 4; k = k + 1)
        if (enable[k]) merge_bytes[9 * k +: 9] = new_word[9 * k +: 9];
    end
  endfunction

  generate if (PDP) begin : pdp
    wire [8:0] waddr = ada[13:5], raddr = adb[13:5];
    always @(posedge CLKA) if (CEA && WEA) mem[waddr] <= merge_bytes(mem[waddr], {dib, dia}, ada[3:0]);
    always @(posedge CLKB) begin
      if (CEB) read_w <= (CEA && WEA && ada[3:0] != 0 && waddr == raddr) ? 36'bx : mem[raddr];
      if (OCEB) out_w <= read_w;
    end
    wire [35:0] dout = REGMODE_B == "OUTREG" ? out_w : read_w;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0,
            DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} = dout;
    initial if (REGMODE_A != REGMODE_B) $fatal(1, "DP16KD model: 36-bit mode with REGMODE_A != REGMODE_B");
  end else begin : tdp
    // 18 bits: the word at AD*[13:4]. 9 bits: byte AD*[3] of that word (read only).
    localparam NARROW = DATA_WIDTH_A == 9;
    wire [9:0] addr_a = ada[13:4], addr_b = adb[13:4];
    function [17:0] read_word(input [35:0] stored, input byte_select);
      read_word = NARROW ? {9'bx, stored[9 * byte_select +: 9]} : stored[17:0];
    endfunction
    always @(posedge CLKA) begin
      if (CEA && WEA) mem[addr_a] <= merge_bytes(mem[addr_a], {18'b0, dia}, {2'b0, ada[1:0]});
      if (CEA && !WEA) read_a <= (CEB && WEB && adb[1:0] != 0 && addr_a == addr_b) ? 18'bx : read_word(mem[addr_a], ada[3]);
      if (OCEA) out_a <= read_a;
    end
    always @(posedge CLKB) begin
      if (CEB && WEB) mem[addr_b] <= merge_bytes(mem[addr_b], {18'b0, dib}, {2'b0, adb[1:0]});
      if (CEB && !WEB) read_b <= (CEA && WEA && ada[1:0] != 0 && addr_a == addr_b) ? 18'bx : read_word(mem[addr_b], adb[3]);
      if (OCEB) out_b <= read_b;
    end
    always @(posedge CLKA, posedge CLKB)
      if (NARROW && ((CEA && WEA) || (CEB && WEB))) $fatal(1, "DP16KD model: writes in the 9-bit mode not modelled");
    assign {DOA17, DOA16, DOA15, DOA14, DOA13, DOA12, DOA11, DOA10, DOA9, DOA8, DOA7, DOA6, DOA5, DOA4, DOA3, DOA2, DOA1, DOA0} =
      REGMODE_A == "OUTREG" ? out_a : read_a;
    assign {DOB17, DOB16, DOB15, DOB14, DOB13, DOB12, DOB11, DOB10, DOB9, DOB8, DOB7, DOB6, DOB5, DOB4, DOB3, DOB2, DOB1, DOB0} =
      REGMODE_B == "OUTREG" ? out_b : read_b;
  end endgenerate
endmodule
