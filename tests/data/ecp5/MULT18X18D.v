// Behavioural model of the ECP5 MULT18X18D, for simulating gateware elaborated for ECP5
// (convgen.hdl.dsp.Multiply). Written for convgen from the primitive's documented
// behaviour (Lattice, ECP5 sysDSP Usage Guide): P = A * B, 18x18 -> 36 bits, A and B
// signed when SIGNEDA / SIGNEDB; each of the input A / B registers (with its sign
// control), the pipeline register and the output register is bypassed ("NONE") or clocked
// by CLK0, loads while its clock enable is high and clears on its reset (synchronous
// with RESETMODE "SYNC"). Only what convgen uses is modelled: CLK0, CE0..CE3, RST0..RST3
// selectable per register; no C input, cascade (SRI/SRO) or MULT_BYPASS. Anything else is
// a $fatal at time 0 rather than a silent difference. No `timescale: the including
// bench's applies.
module MULT18X18D (
    input A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0,
    input B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0,
    input C17, C16, C15, C14, C13, C12, C11, C10, C9, C8, C7, C6, C5, C4, C3, C2, C1, C0,
    input SIGNEDA, SIGNEDB, SOURCEA, SOURCEB,
    input CLK3, CLK2, CLK1, CLK0, CE3, CE2, CE1, CE0, RST3, RST2, RST1, RST0,
    input SRIA17, SRIA16, SRIA15, SRIA14, SRIA13, SRIA12, SRIA11, SRIA10, SRIA9,
    input SRIA8, SRIA7, SRIA6, SRIA5, SRIA4, SRIA3, SRIA2, SRIA1, SRIA0,
    input SRIB17, SRIB16, SRIB15, SRIB14, SRIB13, SRIB12, SRIB11, SRIB10, SRIB9,
    input SRIB8, SRIB7, SRIB6, SRIB5, SRIB4, SRIB3, SRIB2, SRIB1, SRIB0,
    output SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9,
    output SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0,
    output SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9,
    output SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0,
    output ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9,
    output ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0,
    output ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9,
    output ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0,
    output ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9,
    output ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0,
    output P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
    output P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
    output P1, P0, SIGNEDP
);
    parameter REG_INPUTA_CLK = "NONE";
    parameter REG_INPUTA_CE = "CE0";
    parameter REG_INPUTA_RST = "RST0";
    parameter REG_INPUTB_CLK = "NONE";
    parameter REG_INPUTB_CE = "CE0";
    parameter REG_INPUTB_RST = "RST0";
    parameter REG_INPUTC_CLK = "NONE";
    parameter REG_INPUTC_CE = "CE0";
    parameter REG_INPUTC_RST = "RST0";
    parameter REG_PIPELINE_CLK = "NONE";
    parameter REG_PIPELINE_CE = "CE0";
    parameter REG_PIPELINE_RST = "RST0";
    parameter REG_OUTPUT_CLK = "NONE";
    parameter REG_OUTPUT_CE = "CE0";
    parameter REG_OUTPUT_RST = "RST0";
    parameter CLK0_DIV = "ENABLED";
    parameter CLK1_DIV = "ENABLED";
    parameter CLK2_DIV = "ENABLED";
    parameter CLK3_DIV = "ENABLED";
    parameter HIGHSPEED_CLK = "NONE";
    parameter GSR = "ENABLED";
    parameter CAS_MATCH_REG = "FALSE";
    parameter SOURCEB_MODE = "B_SHIFT";
    parameter MULT_BYPASS = "DISABLED";
    parameter RESETMODE = "SYNC";

    wire [17:0] a = {A17, A16, A15, A14, A13, A12, A11, A10, A9, A8, A7, A6, A5, A4, A3, A2, A1, A0};
    wire [17:0] b = {B17, B16, B15, B14, B13, B12, B11, B10, B9, B8, B7, B6, B5, B4, B3, B2, B1, B0};
    wire [3:0] ce = {CE3, CE2, CE1, CE0};
    wire [3:0] rst = {RST3, RST2, RST1, RST0};

    function integer index(input [8*4-1:0] name);     // "CE2" -> 2, "RST1" -> 1
        index = name[7:0] - "0";
    endfunction

    localparam A_CE = index(REG_INPUTA_CE), A_RST = index(REG_INPUTA_RST);
    localparam B_CE = index(REG_INPUTB_CE), B_RST = index(REG_INPUTB_RST);
    localparam M_CE = index(REG_PIPELINE_CE), M_RST = index(REG_PIPELINE_RST);
    localparam P_CE = index(REG_OUTPUT_CE), P_RST = index(REG_OUTPUT_RST);

    initial begin
        if ((REG_INPUTA_CLK != "NONE" && REG_INPUTA_CLK != "CLK0") ||
            (REG_INPUTB_CLK != "NONE" && REG_INPUTB_CLK != "CLK0") ||
            (REG_PIPELINE_CLK != "NONE" && REG_PIPELINE_CLK != "CLK0") ||
            (REG_OUTPUT_CLK != "NONE" && REG_OUTPUT_CLK != "CLK0") ||
            REG_INPUTC_CLK != "NONE" || MULT_BYPASS != "DISABLED" || RESETMODE != "SYNC" ||
            SOURCEB_MODE != "B_SHIFT" || HIGHSPEED_CLK != "NONE") begin
            $display("MULT18X18D model: unsupported configuration");
            $fatal(1);
        end
    end

    reg [17:0] a_q = 0, b_q = 0;
    reg sa_q = 0, sb_q = 0;
    reg [35:0] m_q = 0, p_q = 0;

    wire [17:0] a_v = REG_INPUTA_CLK == "CLK0" ? a_q : a;
    wire [17:0] b_v = REG_INPUTB_CLK == "CLK0" ? b_q : b;
    wire sa_v = REG_INPUTA_CLK == "CLK0" ? sa_q : SIGNEDA;
    wire sb_v = REG_INPUTB_CLK == "CLK0" ? sb_q : SIGNEDB;
    // Operands extended to 36 bits by their signedness; the low 36 bits of the product.
    wire [35:0] a_x = {{18{sa_v & a_v[17]}}, a_v};
    wire [35:0] b_x = {{18{sb_v & b_v[17]}}, b_v};
    wire [35:0] m_d = a_x * b_x;
    wire [35:0] m_v = REG_PIPELINE_CLK == "CLK0" ? m_q : m_d;
    wire [35:0] p_v = REG_OUTPUT_CLK == "CLK0" ? p_q : m_v;

    always @(posedge CLK0) begin
        if (rst[A_RST]) begin a_q <= 0; sa_q <= 0; end
        else if (ce[A_CE]) begin a_q <= a; sa_q <= SIGNEDA; end
        if (rst[B_RST]) begin b_q <= 0; sb_q <= 0; end
        else if (ce[B_CE]) begin b_q <= b; sb_q <= SIGNEDB; end
        if (rst[M_RST]) m_q <= 0;
        else if (ce[M_CE]) m_q <= m_d;
        if (rst[P_RST]) p_q <= 0;
        else if (ce[P_CE]) p_q <= m_v;
    end

    assign {P35, P34, P33, P32, P31, P30, P29, P28, P27, P26, P25, P24, P23, P22, P21, P20,
            P19, P18, P17, P16, P15, P14, P13, P12, P11, P10, P9, P8, P7, P6, P5, P4, P3, P2,
            P1, P0} = p_v;
    assign SIGNEDP = sa_v | sb_v;
    assign {SROA17, SROA16, SROA15, SROA14, SROA13, SROA12, SROA11, SROA10, SROA9,
            SROA8, SROA7, SROA6, SROA5, SROA4, SROA3, SROA2, SROA1, SROA0} = a_v;
    assign {SROB17, SROB16, SROB15, SROB14, SROB13, SROB12, SROB11, SROB10, SROB9,
            SROB8, SROB7, SROB6, SROB5, SROB4, SROB3, SROB2, SROB1, SROB0} = b_v;
    assign {ROA17, ROA16, ROA15, ROA14, ROA13, ROA12, ROA11, ROA10, ROA9,
            ROA8, ROA7, ROA6, ROA5, ROA4, ROA3, ROA2, ROA1, ROA0} = a_v;
    assign {ROB17, ROB16, ROB15, ROB14, ROB13, ROB12, ROB11, ROB10, ROB9,
            ROB8, ROB7, ROB6, ROB5, ROB4, ROB3, ROB2, ROB1, ROB0} = b_v;
    assign {ROC17, ROC16, ROC15, ROC14, ROC13, ROC12, ROC11, ROC10, ROC9,
            ROC8, ROC7, ROC6, ROC5, ROC4, ROC3, ROC2, ROC1, ROC0} = 18'b0;
endmodule
