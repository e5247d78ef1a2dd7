/* Standalone driver for the HPL inside Debian's hpcc 1.5.0 source: HPCC renamed HPL's
 * main to HPL_main and expects its caller to initialise MPI. */
#include <stdio.h>
#include <string.h>
#include <mpi.h>
#include "hpl.h"

int HPL_main(int argc, char **argv, HPL_RuntimeData *rdata, int *failure);

/* HPL_pdinfo falls back to HPCC's defaults on an unreadable input file; a benchmark must
 * not silently run something else. */
int HPCC_Defaults(void) {
    fprintf(stderr, "xhpl: hpccinf.txt is missing or invalid\n");
    MPI_Abort(MPI_COMM_WORLD, 2);
    return 1;
}

int main(int argc, char **argv) {
    HPL_RuntimeData rdata;
    int failure = 0, rank = 0;
    memset(&rdata, 0, sizeof rdata);
    MPI_Init(&argc, &argv);
    HPL_main(argc, argv, &rdata, &failure);
    MPI_Comm_rank(MPI_COMM_WORLD, &rank);
    if (rank == 0)
        printf("VIOLIN_HPL gflops=%.6f time=%.6f n=%d nb=%d p=%d q=%d failure=%d\n",
               rdata.Gflops, rdata.time, rdata.N, rdata.NB, rdata.nprow, rdata.npcol, failure);
    MPI_Finalize();
    return failure;
}
